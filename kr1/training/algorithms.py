"""RL algorithms as pure tensor functions, looked up by name from the config.

    advantages = ADVANTAGE_ESTIMATORS["grpo"](rewards, group_ids, norm_by_std=True)
    out = policy_loss(logprobs=lp, old_logprobs=old, ref_logprobs=ref, advantages=adv,
                      loss_mask=mask, clip_eps=0.2, kl_coef=1e-3, kl_estimator="k3", normalizer=n)

Losses aggregate by token mean over the loss mask: the sum over every model-generated
token divided by `normalizer`, the number of such tokens in the whole optimizer step
(across micro-batches and data-parallel ranks), so splitting a batch never changes
the gradient. With `loss_agg="seq_mean"` each sequence's tokens are first averaged and
`normalizer` counts sequences (`loss_normalizer`). Prompt, retrieved and appended tokens have mask 0 and never count.
No Ray, no vLLM here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Hashable, Sequence

import numpy as np
import torch


EPS = 1e-6


def grpo_advantages(rewards: torch.Tensor, group_ids: torch.Tensor, norm_by_std: bool = True) -> torch.Tensor:
    """(B,) GRPO: each reward minus its group's mean, divided by the group's std when asked."""
    rewards = rewards.float()
    groups, index = torch.unique(group_ids, return_inverse=True)
    counts = torch.zeros(len(groups)).index_add_(0, index, torch.ones_like(rewards))
    means = torch.zeros(len(groups)).index_add_(0, index, rewards) / counts
    centred = rewards - means[index]
    if not norm_by_std:
        return centred
    # unbiased std as in GRPO; a group of one has no spread
    sq = torch.zeros(len(groups)).index_add_(0, index, centred ** 2)
    std = torch.sqrt(sq / (counts - 1).clamp(min=1))
    return centred / (std[index] + EPS)


def reinforce_pp_advantages(rewards: torch.Tensor, group_ids: torch.Tensor, norm_by_std: bool = True) -> torch.Tensor:
    """(B,) REINFORCE++-baseline: subtract the group mean, then normalise over the whole batch."""
    centred = grpo_advantages(rewards, group_ids, norm_by_std=False)
    if not norm_by_std or len(centred) < 2:
        return centred - centred.mean()
    return (centred - centred.mean()) / (centred.std() + EPS)


def anchor_state_advantages(rewards: torch.Tensor, group_ids: torch.Tensor, states: Sequence[Sequence[Hashable]],
                            norm_by_std: bool = True) -> list[list[float]]:
    """GiGPO's step-level advantages (Feng et al., 2025): per episode, per turn, its return (the episode's reward)
    against those of its group's episodes that reached the same state before that turn, normalised as GRPO's.

    `states[i][k]` names the state episode i's turn k acted in; a turn whose state no other episode of its group
    reached gets 0 (nothing to compare its action with)."""
    groups = group_ids.tolist()
    rows = [i for i, turn_states in enumerate(states) for _ in turn_states]
    anchors: dict[tuple, int] = {}  # (group, state) -> an id: grpo_advantages over (episode, turn) pairs
    ids = [anchors.setdefault((groups[i], state), len(anchors)) for i, turn_states in enumerate(states)
           for state in turn_states]
    flat = grpo_advantages(rewards.float()[rows], torch.tensor(ids, dtype=torch.long), norm_by_std).tolist()
    out, at = [], 0
    for turn_states in states:
        out.append(flat[at:at + len(turn_states)])
        at += len(turn_states)
    return out


def turn_token_advantages(episode_advantages: np.ndarray, step_advantages: Sequence[Sequence[float]],
                          turn_starts: Sequence[Sequence[int]], prompt_lengths: np.ndarray, width: int,
                          step_weight: float) -> np.ndarray:
    """(B, T) advantages: each token the episode's advantage plus `step_weight` x its turn's step-level advantage.
    `turn_starts[i][k]`: where turn k's tokens begin in episode i's response (a turn runs to the next one's start,
    the tokens kr1 appended included: the loss mask leaves those out)."""
    out = np.repeat(np.asarray(episode_advantages, dtype=np.float32)[:, None], width, axis=1)
    for i, (steps, starts) in enumerate(zip(step_advantages, turn_starts)):
        offset = int(prompt_lengths[i])
        for k, (advantage, start) in enumerate(zip(steps, starts)):
            end = starts[k + 1] if k + 1 < len(starts) else width - offset
            out[i, offset + start:offset + end] += step_weight * advantage
    return out


ADVANTAGE_ESTIMATORS: dict[str, Callable[..., torch.Tensor]] = {
    "grpo": grpo_advantages,
    "reinforce_pp": reinforce_pp_advantages,
}


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token KL(policy || reference): k1 = log ratio; k3 = exp(-log ratio) + log ratio - 1 (>= 0)."""
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k3":
        return torch.exp(-log_ratio) + log_ratio - 1.0
    raise ValueError(f"unknown KL estimator {estimator!r} (k1 or k3)")


LOSS_AGGREGATIONS = ("token_mean", "seq_mean")


def loss_normalizer(loss_mask: np.ndarray, loss_agg: str) -> float:
    """What the step's loss sum is divided by: its loss tokens (token_mean) or its sequences that have any
    (seq_mean); at least 1."""
    if loss_agg not in LOSS_AGGREGATIONS:
        raise ValueError(f"unknown loss aggregation {loss_agg!r} ({', '.join(LOSS_AGGREGATIONS)})")
    count = loss_mask.sum() if loss_agg == "token_mean" else (loss_mask.sum(axis=1) > 0).sum()
    return float(max(1, int(count)))


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar to backpropagate (this part's share of the token mean)
    pg_loss: float  # the parts, as token sums / normalizer, for logging
    kl: float
    clip_fraction: float
    entropy: float
    # the decoupled objective's importance weights over loss tokens: their sum and the truncated ones'
    # (both / normalizer) and their largest before truncation; 1, 1 and 0 without behaviour log-probs
    behaviour_weight: float = 0.0
    behaviour_weight_max: float = 1.0
    behaviour_truncated: float = 0.0


def policy_loss(*, logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                loss_mask: torch.Tensor, clip_eps: float, normalizer: float, ref_logprobs: torch.Tensor | None = None,
                kl_coef: float = 0.0, kl_estimator: str = "k3", entropy: torch.Tensor | None = None,
                entropy_coef: float = 0.0, clip_eps_high: float | None = None,
                loss_agg: str = "token_mean", behaviour_logprobs: torch.Tensor | None = None,
                behaviour_clip: float = 2.0) -> LossOutput:
    """PPO-clip policy gradient + KL-to-reference penalty (+ entropy bonus), summed / normalizer.

    The ratio is clipped to [1 - clip_eps, 1 + clip_eps_high] (clip_eps_high null: clip_eps). Token sums
    weigh each loss token 1 (token_mean) or 1 / its sequence's loss tokens (seq_mean).
    With `behaviour_logprobs` (the policy that sampled the tokens, some updates old: trainer.mode=async) the
    objective is AReaL's decoupled one: `old_logprobs` are the proximal policy's, the clip acts on
    pi / pi_proximal, and each token's term is weighed by pi_proximal / pi_behaviour, truncated at
    `behaviour_clip` (no gradient through it); equal log-probs give weight 1, today's loss exactly.
    Shapes: logprobs, old_logprobs, ref_logprobs, loss_mask, entropy, behaviour_logprobs (B, T);
    advantages (B,) or (B, T).
    """
    if loss_agg not in LOSS_AGGREGATIONS:
        raise ValueError(f"unknown loss aggregation {loss_agg!r} ({', '.join(LOSS_AGGREGATIONS)})")
    mask = loss_mask.float()
    if loss_agg == "seq_mean":
        mask = mask / mask.sum(-1, keepdim=True).clamp(min=1.0)
    high = clip_eps if clip_eps_high is None else clip_eps_high
    adv = advantages.unsqueeze(-1) if advantages.dim() == 1 else advantages
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + high) * adv
    pg = -torch.minimum(unclipped, clipped)
    weight_stats = [torch.zeros(()), torch.ones(()), torch.zeros(())]
    if behaviour_logprobs is not None:
        weight = torch.exp(old_logprobs.detach() - behaviour_logprobs)
        truncated = weight > behaviour_clip
        pg = pg * weight.clamp(max=behaviour_clip)
        loss_tokens = loss_mask > 0
        largest = weight[loss_tokens].max() if loss_tokens.any() else torch.ones(())
        weight_stats = [(weight * mask).sum(), largest, (truncated.float() * mask).sum()]
    total = (pg * mask).sum()
    kl_sum = torch.zeros(())
    if ref_logprobs is not None:
        kl_sum = (kl_estimate(logprobs, ref_logprobs, kl_estimator) * mask).sum()
        total = total + kl_coef * kl_sum
    entropy_sum = (entropy * mask).sum() if entropy is not None else torch.zeros(())
    if entropy is not None and entropy_coef:
        total = total - entropy_coef * entropy_sum
    clip_sum = (((ratio < 1.0 - clip_eps) | (ratio > 1.0 + high)).float() * mask).sum()
    logged = [(pg * mask).sum(), kl_sum, clip_sum, entropy_sum]
    pg_value, kl_value, clip_value, entropy_value = (x.detach().item() / normalizer for x in logged)
    weight_sum, weight_max, truncated_sum = (x.detach().item() for x in weight_stats)
    return LossOutput(total / normalizer, pg_value, kl_value, clip_value, entropy_value,
                      weight_sum / normalizer if behaviour_logprobs is not None else 0.0, weight_max,
                      truncated_sum / normalizer)
