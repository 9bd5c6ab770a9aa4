"""Chunked log-probs and entropy equal the full-logits path: values, loss and every gradient.

In float64: the two paths are the same arithmetic in another order, so they agree to ~1e-12 there on every
CPU kernel path; in float32 the order alone moves values by ~1e-5 between AVX2 and AVX-512 kernels, and a
first AdamW step turns such a difference in a near-zero gradient into a difference of the step's size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from kr1.config import load_config
from kr1.training.batch import TrainBatch
from kr1.training.policy_update import batch_logprobs, forward, train_step

pytestmark = pytest.mark.numerics  # two computation paths compared in float64


def _model(tie: bool, seed: int = 0):
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tie)
    return Qwen2ForCausalLM(config).double()


def _batch(rows=6, width=40, seed=0) -> TrainBatch:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(width // 2, width + 1, rows)
    mask = (np.arange(width)[None] < lengths[:, None]).astype(np.int8)
    loss_mask = mask.copy()
    loss_mask[:, :8] = 0
    return TrainBatch(input_ids=rng.integers(1, 1000, (rows, width)).astype(np.int64) * mask, attention_mask=mask,
                      loss_mask=loss_mask, prompt_lengths=np.full(rows, 8), group_ids=np.arange(rows) // 2,
                      advantages=rng.standard_normal(rows).astype(np.float32),
                      ref_logprobs=-rng.random((rows, width)))


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("chunk", [1, 7, 64, 10_000])
def test_chunked_logprobs_and_entropy_equal_the_full_logits(tie, chunk):
    model, batch = _model(tie), _batch()
    ids, mask = torch.as_tensor(batch.input_ids), torch.as_tensor(batch.attention_mask.astype(np.int64))
    full_lp, full_ent = forward(model, ids, mask, with_entropy=True, entropy_grad=True)
    lp, ent = forward(model, ids, mask, with_entropy=True, chunk_tokens=chunk, entropy_grad=True)
    torch.testing.assert_close(lp, full_lp, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(ent, full_ent, atol=1e-10, rtol=1e-10)
    grads = []
    for out in ((full_lp, full_ent), (lp, ent)):
        model.zero_grad()
        (out[0].sum() + 0.1 * out[1].sum()).backward(retain_graph=True)
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-10, rtol=1e-8, msg=name)
    assert model.lm_head.forward.__func__ is torch.nn.Linear.forward  # the head is itself again


@pytest.mark.parametrize("chunk", [0, 7])
def test_log_probs_are_those_of_the_sampling_temperature(chunk):
    """The learner scores log p of softmax(logits / T), the distribution the rollout sampled from."""
    model, batch = _model(tie=True), _batch()
    ids, mask = torch.as_tensor(batch.input_ids), torch.as_tensor(batch.attention_mask.astype(np.int64))
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    expected = torch.log_softmax(logits[:, :-1] / 0.7, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    sharp = torch.log_softmax(logits[:, :-1] / 0.7, -1)
    lp, ent = forward(model, ids, mask, with_entropy=True, chunk_tokens=chunk, temperature=0.7)
    torch.testing.assert_close(lp[:, 1:], expected, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(ent[:, 1:], -(sharp.exp() * sharp).sum(-1), atol=1e-10, rtol=1e-10)
    plain, _ = forward(model, ids, mask, chunk_tokens=chunk)
    assert (plain - lp).abs().max() > 0.01  # temperature 1 is another distribution


def test_a_chunked_train_step_makes_the_same_update():
    cfg = load_config("default", ["algorithm.kl_coef=0.01", "algorithm.entropy_coef=0.01"])
    batch, results = _batch(), []
    for chunk in (0, 16):
        model = _model(tie=True)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        micro = [np.arange(0, 3), np.arange(3, 6)]
        metrics = train_step(model, optimizer, batch, micro, normalizer=float(batch.num_loss_tokens), scale=1.0,
                             algo=cfg.algorithm, grad_clip=1.0, device=torch.device("cpu"), chunk_tokens=chunk)
        results.append((metrics, {n: p.detach().clone() for n, p in model.named_parameters()},
                        batch_logprobs(model, batch, micro, torch.device("cpu"), chunk_tokens=chunk)))
    (plain, w_plain, lp_plain), (chunked, w_chunked, lp_chunked) = results
    for key in ("loss", "pg_loss", "kl", "entropy", "grad_norm"):
        assert chunked[key] == pytest.approx(plain[key], rel=1e-9, abs=1e-12), key
    for name in w_plain:
        torch.testing.assert_close(w_chunked[name], w_plain[name], atol=1e-9, rtol=1e-8)  # AdamW, lr 1e-2
    np.testing.assert_allclose(lp_chunked, lp_plain, rtol=1e-6)  # float64 values rounded to float32


def test_the_entropy_bonus_now_has_a_gradient():
    """entropy_coef was inert: the entropy came from detached logits. Now it moves the weights."""
    cfg_on = load_config("default", ["algorithm.entropy_coef=0.5", "algorithm.kl_coef=0"]).algorithm
    cfg_off = load_config("default", ["algorithm.entropy_coef=0", "algorithm.kl_coef=0"]).algorithm
    batch, weights = _batch(), []
    for algo in (cfg_on, cfg_off):
        model = _model(tie=True)
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        train_step(model, optimizer, batch, [np.arange(6)], normalizer=float(batch.num_loss_tokens), scale=1.0,
                   algo=algo, grad_clip=1e9, device=torch.device("cpu"))
        weights.append(model.lm_head.weight.detach().clone())
    assert (weights[0] - weights[1]).abs().max() > 1e-4
