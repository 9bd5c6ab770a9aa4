"""Advantages and losses on hand-built tensors: group normalisation, masking, token mean, KL, clipping."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kr1.logprobs import token_entropy, token_logprobs
from kr1.training.algorithms import (ADVANTAGE_ESTIMATORS, anchor_state_advantages, grpo_advantages, kl_estimate,
                                     loss_normalizer, policy_loss, reinforce_pp_advantages, turn_token_advantages)

pytestmark = pytest.mark.numerics  # losses and gradients compared with float tolerances


def test_grpo_normalises_within_each_group():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    groups = torch.tensor([0, 0, 0, 0, 7, 7, 7, 7])
    adv = grpo_advantages(rewards, groups, norm_by_std=True)
    std = math.sqrt(4 * 0.25 / 3)  # unbiased std of [1, 0, 0, 1]
    torch.testing.assert_close(adv[:4], torch.tensor([0.5, -0.5, -0.5, 0.5]) / (std + 1e-6))
    torch.testing.assert_close(adv[4:], torch.zeros(4))  # a group that all agrees teaches nothing
    torch.testing.assert_close(grpo_advantages(rewards, groups, norm_by_std=False)[:4],
                               torch.tensor([0.5, -0.5, -0.5, 0.5]))


def test_grpo_groups_need_not_be_contiguous():
    rewards = torch.tensor([1.0, 3.0, 0.0, 5.0])
    groups = torch.tensor([1, 2, 1, 2])
    torch.testing.assert_close(grpo_advantages(rewards, groups, norm_by_std=False), torch.tensor([0.5, -1, -0.5, 1]))


def test_step_advantages_compare_a_turn_only_with_turns_taken_in_the_same_state():
    # one question, four episodes: two searched "a" first, two "b"; then each answered
    rewards, groups = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0]), torch.tensor([0, 0, 0, 0, 1])
    a, b = (("search", "a"),), (("search", "b"),)
    states = [[(), a], [(), a], [(), b], [(), b], [(), a]]  # the last is another question's: never compared
    steps = anchor_state_advantages(rewards, groups, states, norm_by_std=False)
    first = grpo_advantages(rewards, groups, norm_by_std=False).tolist()
    assert [row[0] for row in steps] == pytest.approx(first)  # the first turn's state is the question: the group
    # after "a" one answer was right and one wrong; after "b" both right: that second turn taught nothing
    assert [row[1] for row in steps] == pytest.approx([0.5, -0.5, 0.0, 0.0, 0.0])
    scaled = anchor_state_advantages(rewards, groups, states, norm_by_std=True)
    assert [row[1] for row in scaled] == pytest.approx([0.5 / math.sqrt(0.5), -0.5 / math.sqrt(0.5), 0, 0, 0], abs=1e-5)


def test_shared_state_rate_counts_the_later_turns_another_episode_of_the_question_reached():
    from kr1.rollout.episodes import Episode
    from kr1.run.metrics import shared_state_rate

    def played(question, *queries):
        e = Episode(question, 0, [1])
        e.actions, e.queries = ["search"] * len(queries) + ["answer"], list(queries)
        return e
    # q1: two searched "Ann  Lee" (spaces and case aside), one "Bob": 2 of 3 second turns shared, no third turn
    # shared; q2's "Ann Lee" is another question's state
    episodes = [played("q1", "Ann  Lee", "x"), played("q1", "ann lee", "y"), played("q1", "Bob"), played("q2", "Ann Lee")]
    assert shared_state_rate(episodes) == pytest.approx(100 * 2 / 6)
    assert shared_state_rate([played("q1")]) == 0.0


def test_turn_token_advantages_add_each_turns_step_advantage_to_its_own_tokens():
    # episode 0: prompt of 2, turn 0 at response 0..2, turn 1 at 3..; episode 1: prompt of 1, one turn
    out = turn_token_advantages(np.array([1.0, -1.0]), [[0.5, -2.0], [0.25]], [[0, 3], [0]], np.array([2, 1]),
                                width=8, step_weight=2.0)
    assert out.shape == (2, 8) and out.dtype == np.float32
    assert out[0].tolist() == [1, 1, 2, 2, 2, -3, -3, -3]  # the prompt keeps the episode's (its mask is 0)
    assert out[1].tolist() == [-1, -0.5, -0.5, -0.5, -0.5, -0.5, -0.5, -0.5]
    unweighted = turn_token_advantages(np.array([1.0]), [[3.0]], [[0]], np.array([1]), 4, step_weight=0.0)
    assert np.array_equal(unweighted, np.ones((1, 4)))


def test_reinforce_pp_normalises_over_the_batch():
    rewards = torch.tensor([1.0, 0.0, 3.0, 1.0, 2.0, 0.0])
    groups = torch.tensor([0, 0, 1, 1, 2, 2])
    adv = reinforce_pp_advantages(rewards, groups)
    assert abs(float(adv.mean())) < 1e-6 and abs(float(adv.std()) - 1.0) < 1e-4
    assert set(ADVANTAGE_ESTIMATORS) == {"grpo", "reinforce_pp"}


def _loss(logprobs, mask, adv, **kw):
    defaults = dict(old_logprobs=logprobs.detach(), clip_eps=0.2, normalizer=float(mask.sum()))
    return policy_loss(logprobs=logprobs, advantages=adv, loss_mask=mask, **{**defaults, **kw})


def test_masked_tokens_carry_no_loss_and_no_gradient():
    # tokens 0-1 prompt, 2-3 generated, 4-5 retrieved (mask 0), 6 generated
    mask = torch.tensor([[0, 0, 1, 1, 0, 0, 1]])
    logprobs = torch.randn(1, 7, requires_grad=True)
    ref = torch.randn(1, 7)
    out = _loss(logprobs, mask, torch.tensor([1.5]), ref_logprobs=ref, kl_coef=0.1)
    out.loss.backward()
    assert torch.all(logprobs.grad[mask == 0] == 0) and torch.all(logprobs.grad[mask == 1] != 0)
    # changing retrieved-token log-probs leaves the loss unchanged
    changed = logprobs.detach().clone()
    changed[0, 4:6] += 5.0
    again = _loss(changed, mask, torch.tensor([1.5]), old_logprobs=logprobs.detach(), ref_logprobs=ref, kl_coef=0.1)
    assert again.loss.item() == pytest.approx(out.loss.item())


def test_on_policy_loss_is_minus_advantage_token_mean():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    logprobs = torch.zeros(2, 3, requires_grad=True)
    out = _loss(logprobs, mask, torch.tensor([2.0, -1.0]))
    # ratio 1 everywhere: each generated token contributes -advantage; 3 tokens in all
    assert float(out.loss.detach()) == pytest.approx((-2.0 - 2.0 + 1.0) / 3)
    assert out.clip_fraction == 0.0


def test_token_mean_is_invariant_to_micro_batch_splits():
    torch.manual_seed(0)
    logprobs, old, ref = torch.randn(4, 6), torch.randn(4, 6), torch.randn(4, 6)
    mask = (torch.rand(4, 6) > 0.3).long()
    adv = torch.randn(4)
    n = float(mask.sum())
    whole = policy_loss(logprobs=logprobs, old_logprobs=old, advantages=adv, loss_mask=mask, clip_eps=0.2,
                        normalizer=n, ref_logprobs=ref, kl_coef=0.05)
    parts = [policy_loss(logprobs=logprobs[s], old_logprobs=old[s], advantages=adv[s], loss_mask=mask[s],
                         clip_eps=0.2, normalizer=n, ref_logprobs=ref[s], kl_coef=0.05)
             for s in (slice(0, 1), slice(1, 3), slice(3, 4))]
    assert float(sum(p.loss for p in parts)) == pytest.approx(float(whole.loss), abs=1e-6)
    assert sum(p.kl for p in parts) == pytest.approx(whole.kl, abs=1e-6)


def test_kl_estimators():
    lp, ref = torch.tensor([0.0, -1.0, -2.0]), torch.tensor([0.0, -2.0, -1.0])
    torch.testing.assert_close(kl_estimate(lp, ref, "k1"), torch.tensor([0.0, 1.0, -1.0]))
    k3 = kl_estimate(lp, ref, "k3")
    torch.testing.assert_close(k3, torch.tensor([0.0, math.exp(-1) + 1 - 1, math.exp(1) - 1 - 1]))
    assert torch.all(k3 >= 0)
    with pytest.raises(ValueError, match="k2"):
        kl_estimate(lp, ref, "k2")


def test_clipping_stops_the_gradient_beyond_the_trust_region():
    mask = torch.tensor([[1, 1]])
    old = torch.zeros(1, 2)
    logprobs = torch.tensor([[0.5, 0.05]], requires_grad=True)  # ratios e^0.5 (clipped) and e^0.05
    out = _loss(logprobs, mask, torch.tensor([1.0]), old_logprobs=old)
    out.loss.backward()
    assert logprobs.grad[0, 0] == 0 and logprobs.grad[0, 1] != 0
    assert out.clip_fraction == pytest.approx(0.5)


def test_token_logprobs_and_entropy_alignment():
    logits = torch.log(torch.tensor([[[0.5, 0.5, 0.0 + 1e-9], [0.1, 0.2, 0.7], [1 / 3, 1 / 3, 1 / 3]]]))
    ids = torch.tensor([[0, 2, 1]])
    lp = token_logprobs(logits, ids)
    torch.testing.assert_close(lp, torch.log(torch.tensor([[1.0, 1e-9 / (1 + 1e-9), 0.2]])), atol=1e-5, rtol=1e-4)
    ent = token_entropy(logits)
    assert ent[0, 0] == 0 and ent[0, 1] == pytest.approx(math.log(2), abs=1e-4)


def test_asymmetric_clip_lets_a_positive_advantage_raise_a_ratio_further_than_it_may_fall():
    mask = torch.tensor([[1, 1, 1, 1]])
    old = torch.zeros(1, 4)
    # ratios e^0.22 = 1.25 (inside 1 + 0.28, outside 1 + 0.2), e^0.3 = 1.35 (outside both), e^-0.25 = 0.78
    # (outside 1 - 0.2 for a negative advantage), e^0.1 (inside everything)
    logprobs = torch.tensor([[0.22, 0.3, -0.25, 0.1]], requires_grad=True)
    adv = torch.tensor([[1.0, 1.0, -1.0, 1.0]])
    symmetric = _loss(logprobs, mask, adv, old_logprobs=old)
    symmetric.loss.backward()
    assert [bool(g != 0) for g in logprobs.grad[0]] == [False, False, False, True]
    logprobs.grad = None
    dapo = _loss(logprobs, mask, adv, old_logprobs=old, clip_eps_high=0.28)  # DAPO's clip-higher: 0.2 / 0.28
    dapo.loss.backward()
    assert [bool(g != 0) for g in logprobs.grad[0]] == [True, False, False, True]
    assert symmetric.clip_fraction == pytest.approx(3 / 4) and dapo.clip_fraction == pytest.approx(2 / 4)


def test_seq_mean_weighs_every_sequence_the_same_and_token_mean_every_token():
    mask = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]])  # a long and a short response
    logprobs = torch.zeros(2, 4, requires_grad=True)
    adv = torch.tensor([1.0, -1.0])
    tokens = _loss(logprobs, mask, adv, normalizer=loss_normalizer(mask.numpy(), "token_mean"))
    sequences = _loss(logprobs, mask, adv, normalizer=loss_normalizer(mask.numpy(), "seq_mean"), loss_agg="seq_mean")
    assert tokens.loss.item() == pytest.approx((-4 * 1.0 + 1.0) / 5)  # the long response's 4 tokens dominate
    assert sequences.loss.item() == pytest.approx((-1.0 + 1.0) / 2)  # one sequence each way: they cancel
    sequences.loss.backward()
    torch.testing.assert_close(logprobs.grad, torch.tensor([[-1 / 8] * 4, [1 / 2, 0, 0, 0]]))
    assert loss_normalizer(np.array([[1, 1], [0, 0], [0, 1]]), "seq_mean") == 2.0  # a prompt-only row is no sequence
    with pytest.raises(ValueError, match="token_sum"):
        loss_normalizer(mask.numpy(), "token_sum")


def test_seq_mean_is_invariant_to_micro_batch_splits():
    torch.manual_seed(1)
    logprobs, old = torch.randn(4, 6), torch.randn(4, 6)
    mask = (torch.rand(4, 6) > 0.3).long()
    adv = torch.randn(4)
    n = loss_normalizer(mask.numpy(), "seq_mean")
    kw = dict(clip_eps=0.2, clip_eps_high=0.3, normalizer=n, loss_agg="seq_mean")
    whole = policy_loss(logprobs=logprobs, old_logprobs=old, advantages=adv, loss_mask=mask, **kw)
    parts = [policy_loss(logprobs=logprobs[s], old_logprobs=old[s], advantages=adv[s], loss_mask=mask[s], **kw)
             for s in (slice(0, 1), slice(1, 4))]
    assert float(sum(p.loss for p in parts)) == pytest.approx(float(whole.loss), abs=1e-6)


def test_decoupled_loss_with_behaviour_equal_to_proximal_is_todays_loss_exactly():
    torch.manual_seed(1)
    logprobs, old, ref = torch.randn(3, 5, requires_grad=True), torch.randn(3, 5), torch.randn(3, 5)
    mask, adv = (torch.rand(3, 5) > 0.3).long(), torch.randn(3)
    kw = dict(old_logprobs=old, advantages=adv, loss_mask=mask, clip_eps=0.2, clip_eps_high=0.28,
              normalizer=float(mask.sum()), ref_logprobs=ref, kl_coef=0.05)
    today = policy_loss(logprobs=logprobs, **kw)
    (grad_today,) = torch.autograd.grad(today.loss, logprobs)
    decoupled = policy_loss(logprobs=logprobs, behaviour_logprobs=old.clone(), behaviour_clip=2.0, **kw)
    (grad_decoupled,) = torch.autograd.grad(decoupled.loss, logprobs)
    assert torch.equal(today.loss.detach(), decoupled.loss.detach()) and torch.equal(grad_today, grad_decoupled)
    weights = (decoupled.behaviour_weight, decoupled.behaviour_weight_max, decoupled.behaviour_truncated)
    assert weights == (1.0, 1.0, 0.0)


def test_decoupled_loss_weighs_each_token_by_the_truncated_proximal_over_behaviour_ratio():
    # one sequence, three generated tokens; the current policy equals the proximal one (ratio 1, no clip)
    logprobs = torch.zeros(1, 3, requires_grad=True)
    mask, adv = torch.tensor([[1, 1, 1]]), torch.tensor([1.0])
    behaviour = torch.log(torch.tensor([[1.0, 2.0, 0.25]]))  # weights pi_prox / pi_behaviour: 1, 0.5, 4
    out = policy_loss(logprobs=logprobs, old_logprobs=torch.zeros(1, 3), advantages=adv, loss_mask=mask,
                      clip_eps=0.2, normalizer=3.0, behaviour_logprobs=behaviour, behaviour_clip=2.0)
    # each token's term is -advantage x its weight, the last truncated to 2
    assert float(out.loss.detach()) == pytest.approx(-(1.0 + 0.5 + 2.0) / 3)
    out.loss.backward()
    torch.testing.assert_close(logprobs.grad, torch.tensor([[-1.0, -0.5, -2.0]]) / 3)
    assert out.behaviour_weight == pytest.approx((1.0 + 0.5 + 4.0) / 3)
    assert out.behaviour_weight_max == pytest.approx(4.0)
    assert out.behaviour_truncated == pytest.approx(1 / 3)


def test_decoupled_loss_clips_against_the_proximal_policy_not_the_behaviour_one():
    # behaviour far from both policies; the proximal policy alone decides what is clipped
    mask, adv = torch.tensor([[1, 1]]), torch.tensor([1.0])
    logprobs = torch.tensor([[0.5, 0.05]], requires_grad=True)  # ratios to the proximal: e^0.5 (clipped), e^0.05
    out = policy_loss(logprobs=logprobs, old_logprobs=torch.zeros(1, 2), advantages=adv, loss_mask=mask,
                      clip_eps=0.2, normalizer=2.0, behaviour_logprobs=torch.full((1, 2), -0.5), behaviour_clip=10.0)
    out.loss.backward()
    assert logprobs.grad[0, 0] == 0 and logprobs.grad[0, 1] != 0 and out.clip_fraction == pytest.approx(0.5)
    weight = math.exp(0.5)
    assert float(out.loss.detach()) == pytest.approx(-(1.2 + math.exp(0.05)) * weight / 2, rel=1e-6)
