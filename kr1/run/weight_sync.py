"""Weight sync: new policy weights from the learner group into every rollout engine.

One interface, `sync(learners, engines)`, four topologies chosen by `learner.weight_sync`:

object_store (default; CPU, GPU, across nodes)

    learner 0 ─┐                                   ┌─> engine 0 (load_state_dict / vLLM reload)
    learner 1 ─┼─ all-gather ─> rank 0 full state ─┼─> engine 1
    learner N ─┘   (FSDP)       dict in the Ray    └─> engine E
                                object store (one copy, fetched by each engine)

cuda_ipc (colocated hybrid engine: learner i and engine i share GPU i)

    learner i ── CUDA IPC handles of the gathered weights (no copy through host memory)
              ──> vLLM worker on the same GPU maps them and copies device-to-device;
    vLLM sleeps during the update and wakes (weights first, then KV cache) for the sync.

nccl (separate GPU pools, larger clusters)

    learner 0 (NCCL rank 0) ── broadcast ──> every vLLM worker (ranks 1..E*tp)
    other learner ranks only join the FSDP all-gather that materialises each tensor.

gloo (vLLM on CPU, or anywhere through host memory)

    learner 0 (gloo rank 0) ── broadcast of each full tensor ──> every vLLM worker (ranks 1..E*tp)
    other learner ranks only join the FSDP all-gather; kr1's own engine (kr1/rollout/gloo_transfer.py).

These three drive vLLM's weight-transfer engines (`vllm.distributed.weight_transfer`: vLLM's
`IPCTrainerWeightTransferEngine` / `NCCLTrainerWeightTransferEngine`, kr1's gloo one, registered with
vLLM's factories) from the learner ranks (their side is `trainer_transfer_engine` in actors/learner.py); the
engines are started with the matching `weight_transfer_config`. This module only orders the steps between the
two pools: the engines wake for their weights, the transfer is set up (once per pair of pools), every learner
rank sends (rank 0 drives the engines' start / update / finish), the engines wake their KV cache.
"""

from __future__ import annotations

from typing import Any, Protocol

from kr1.cluster import get_all


class WeightSync(Protocol):
    def sync(self, learners: Any, engines: Any, wait: bool = True) -> None: ...


class ObjectStoreSync:
    """Gather once on learner rank 0, put in the object store, every engine loads it (`wait=False`: after the
    rollouts it was given before, while the learner goes on)."""

    def sync(self, learners: Any, engines: Any, wait: bool = True) -> None:
        engines.load_weights(learners.state_dict_ref(), wait=wait)


class TransferEngineSync:
    """cuda_ipc / nccl / gloo through vLLM's weight-transfer engines, set up on first use and again for pools
    built since (a learner group rebuilt after a lost rank has no transfer; the engines' peer is gone)."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.ready_for: tuple[Any, Any] | None = None  # the (learners, engines) pools the transfer joins

    def sync(self, learners: Any, engines: Any, wait: bool = True) -> None:
        # the transfer needs both sides at once: an engine receives after the rollouts it was given (no `wait`)
        engines.wake_up(["weights"])  # weights back on the GPU first; the KV cache after the copy
        if self.ready_for is None or self.ready_for[0] is not learners or self.ready_for[1] is not engines:
            get_all([w.init_weight_transfer.remote(self.backend, engines.engines, engines.num_vllm_workers)
                     for w in learners.workers])
            self.ready_for = (learners, engines)
        get_all([w.send_weights.remote() for w in learners.workers])  # a lost rank leaves the others in a gather
        engines.wake_up(["kv_cache"])


def make_weight_sync(mode: str) -> WeightSync:
    """The `learner.weight_sync` topology."""
    if mode == "object_store":
        return ObjectStoreSync()
    if mode == "cuda_ipc":
        return TransferEngineSync("ipc")
    if mode in ("nccl", "gloo"):
        return TransferEngineSync(mode)
    raise ValueError(f"unknown weight sync {mode!r} (object_store, cuda_ipc, nccl or gloo)")
