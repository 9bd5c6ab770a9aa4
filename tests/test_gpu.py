"""GPU paths with Ray and vLLM: colocated cuda_ipc weight sync into sleeping engines, separate-pool nccl sync.

Marked `gpu`; each test skips, with the reason, on a machine with fewer CUDA GPUs than it places, or without
vllm (CI has neither). What a bare CUDA machine can check without Ray or vLLM (the learner under FSDP2 and
NCCL, chunked logits, offload, checkpointing, the memory plan) is `python -m kr1.bench.gpu --checks`.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from kr1.config import load_config

gpu = pytest.mark.gpu


def needs_gpus(count: int) -> pytest.MarkDecorator:
    """Skip unless this machine has `count` CUDA GPUs and vllm (the placement groups would wait forever)."""
    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    missing = "vllm is not installed" if importlib.util.find_spec("vllm") is None else None
    if have < count:
        missing = f"needs {count} CUDA GPU(s), this machine has {have}"
    return pytest.mark.skipif(missing is not None, reason=missing or "")


def _gpu_config(*overrides: str):
    # temperature 1: the learner scores at rollout.temperature and an engine's prompt log-probs at 1
    return load_config("default", ["rollout.backend=vllm", "rollout.temperature=1.0", "learner.lr=1e-2",
                                   "model.dtype=float32", "learner.token_budget=100000", *overrides])


def _sync_check(cfg, tiny_model, batch, retriever_pool):
    """As the driver does it: engines sleep through the update, the sync wakes them; before the sync the engine
    scores with the old weights (clearly different), after it with the learner's."""
    from actors.learner import LearnerGroup
    from actors.rollout_engine import RolloutEnginePool
    from kr1.run.placement import Placement
    from kr1.run.weight_sync import make_weight_sync

    placement = Placement(cfg)
    group = LearnerGroup(cfg, str(tiny_model), placement)
    engines = RolloutEnginePool(cfg, str(tiny_model), retriever_pool, placement)
    sequence = [batch.input_ids[0, :int(batch.lengths[0])].tolist()]
    try:
        engines.sleep()
        group.update(batch)
        learner = group.logprobs(batch.select([0]))[0, 1:len(sequence[0])]
        engines.wake_up()
        stale = np.array(engines.sequence_logprobs(sequence)[0][0])
        engines.sleep()
        sync = make_weight_sync(cfg.learner.weight_sync)
        for _ in range(2):  # set-up on the first sync only; the second sends the same weights again
            sync.sync(group, engines)
        fresh = [np.array(per_engine[0]) for per_engine in engines.sequence_logprobs(sequence)]
    finally:
        engines.close()
        group.close()
        placement.close()
    assert np.abs(stale - learner).max() > 1e-2
    for engine in fresh:  # every engine got them
        np.testing.assert_allclose(engine, learner, atol=2e-3)  # fp32 both sides; GPU kernels reduce in other orders


@gpu
@pytest.mark.parametrize("gpus", [pytest.param(1, marks=needs_gpus(1)), pytest.param(2, marks=needs_gpus(2))])
def test_cuda_ipc_sync_into_colocated_sleeping_engines(ray_session, tiny_model, retriever_pool, rollout_batch, gpus):
    """Learner rank i and engine i share GPU i (hybrid engine); with 2 GPUs rank 1 sends its own IPC handles."""
    cfg = _gpu_config(f"cluster.gpus_per_node={gpus}", "cluster.colocate=true", "learner.weight_sync=cuda_ipc",
                      f"learner.num_workers={gpus}", f"rollout.num_engines={gpus}", "reference.placement=colocate")
    _sync_check(cfg, tiny_model, rollout_batch, retriever_pool)


@gpu
@needs_gpus(3)
def test_nccl_sync_between_separate_pools(ray_session, tiny_model, retriever_pool, rollout_batch):
    """2 learner ranks (rank 0 broadcasts, rank 1 only joins the all-gathers) and 1 engine: 3 GPUs."""
    cfg = _gpu_config("cluster.gpus_per_node=3", "learner.weight_sync=nccl", "learner.num_workers=2",
                      "rollout.num_engines=1", "reference.placement=none")
    _sync_check(cfg, tiny_model, rollout_batch, retriever_pool)


@gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_plan_holds_what_this_gpu_reserves(tmp_path):
    """kr1.bench.gpu's measurement of the 0.5B row, full logits and chunks: the plan is never below it."""
    from kr1.bench.gpu import CASES, case_config, measure, planned

    for chunk in (0, 2048):
        cfg = case_config(CASES["0.5b"], chunk, tmp_path)
        plan, got = planned(cfg), measure(cfg)
        for phase in ("reference", "update"):
            assert got[phase]["reserved+context"] <= plan[phase], (chunk, phase, got, plan)
