"""GPU paths: vLLM rollout on CUDA, colocated cuda_ipc weight sync, separate-pool nccl sync.

Marked `gpu`; they skip (with the reason) on machines without CUDA, such as CI.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from kr1.config import load_config

gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available() or importlib.util.find_spec("vllm") is None,
                                reason="needs a CUDA GPU and vllm")


def _sync_check(cfg, tiny_model, batch, retriever_pool):
    from actors.learner import LearnerGroup
    from actors.rollout_engine import RolloutEnginePool
    from kr1.run.placement import Placement
    from kr1.run.weight_sync import make_weight_sync

    placement = Placement(cfg)
    group = LearnerGroup(cfg, str(tiny_model), placement)
    engines = RolloutEnginePool(cfg, str(tiny_model), retriever_pool, placement)
    try:
        engines.sleep()
        group.update(batch)
        make_weight_sync(cfg.learner.weight_sync).sync(group, engines)
        sequence = [batch.input_ids[0, :int(batch.lengths[0])].tolist()]
        engine = np.array(engines.sequence_logprobs(sequence)[0][0])
        learner = group.logprobs(batch.select([0]))[0, 1:len(sequence[0])]
    finally:
        engines.close()
        group.close()
        placement.close()
    np.testing.assert_allclose(engine, learner, atol=2e-3)  # bf16-free fp32 model: tight


@gpu
@needs_cuda
def test_cuda_ipc_sync_into_a_colocated_sleeping_engine(ray_session, tiny_model, retriever_pool, rollout_batch):
    cfg = load_config("default", ["cluster.gpus_per_node=1", "cluster.colocate=true", "rollout.backend=vllm",
                                  "learner.weight_sync=cuda_ipc", "learner.lr=1e-2", "model.dtype=float32"])
    _sync_check(cfg, tiny_model, rollout_batch, retriever_pool)


@gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs (separate learner and engine pools)")
def test_nccl_sync_between_separate_pools(ray_session, tiny_model, retriever_pool, rollout_batch):
    cfg = load_config("default", ["cluster.gpus_per_node=2", "rollout.backend=vllm", "learner.weight_sync=nccl",
                                  "learner.lr=1e-2", "model.dtype=float32"])
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
