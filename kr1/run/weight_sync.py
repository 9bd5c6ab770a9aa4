"""Weight sync: new policy weights from the learner group into every rollout engine.

One interface, `sync(learners, engines)`, three topologies chosen by `learner.weight_sync`:

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

The GPU modes drive vLLM's own weight-transfer engines (`vllm.distributed.weight_transfer`,
`IPCTrainerWeightTransferEngine` / `NCCLTrainerWeightTransferEngine`) from the learner ranks
(their side is `trainer_transfer_engine` in actors/learner.py); the engines are started with the
matching `weight_transfer_config`. This module only orders the steps between the two pools.
"""

from __future__ import annotations

from typing import Any, Protocol

import ray


class WeightSync(Protocol):
    def sync(self, learners: Any, engines: Any, wait: bool = True) -> None: ...


class ObjectStoreSync:
    """Gather once on learner rank 0, put in the object store, every engine loads it (`wait=False`: after the
    rollouts it was given before, while the learner goes on)."""

    def sync(self, learners: Any, engines: Any, wait: bool = True) -> None:
        engines.load_weights(learners.state_dict_ref(), wait=wait)


class TransferEngineSync:
    """cuda_ipc / nccl through vLLM's weight-transfer engines, set up on first use."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.ready = False

    def sync(self, learners: Any, engines: Any, wait: bool = True) -> None:
        # the transfer needs both sides at once: an engine receives after the rollouts it was given (no `wait`)
        engines.wake_up(["weights"])  # weights back on the GPU first; the KV cache after the copy
        if not self.ready:
            ray.get([w.init_weight_transfer.remote(self.backend, engines.engines, engines.num_vllm_workers)
                     for w in learners.workers])
            self.ready = True
        ray.get([w.send_weights.remote() for w in learners.workers])
        engines.wake_up(["kv_cache"])


def make_weight_sync(mode: str) -> WeightSync:
    """The `learner.weight_sync` topology."""
    if mode == "object_store":
        return ObjectStoreSync()
    if mode == "cuda_ipc":
        return TransferEngineSync("ipc")
    if mode == "nccl":
        return TransferEngineSync("nccl")
    raise ValueError(f"unknown weight sync {mode!r} (object_store, cuda_ipc or nccl)")
