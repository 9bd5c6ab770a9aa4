"""Forward passes and the optimizer step on a `TrainBatch`, for any torch model (plain or FSDP).

    logprobs = batch_logprobs(model, batch, micro_batches, device, chunk_tokens=2048)   # (B, T), no grad
    metrics = train_step(model, optimizer, batch, micro_batches, normalizer=n, scale=world_size,
                         algo=cfg.algorithm, grad_clip=1.0, device=device, chunk_tokens=2048)

`micro_batches` are row-index arrays from `TokenBudgetBatcher`; an empty one runs a
one-token forward/backward that contributes nothing, so every FSDP rank issues the same
collectives. The learner actor and the parity tests both call these functions.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from kr1.config import AlgorithmConfig
from kr1.logprobs import token_entropy, token_logprobs
from kr1.training.algorithms import policy_loss
from kr1.training.batch import TrainBatch
from kr1.training.chunked_logprobs import chunked_output_head


def _tensors(batch: TrainBatch, rows: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
    part = batch.select(rows)
    out = {"input_ids": torch.as_tensor(part.input_ids, device=device),
           "attention_mask": torch.as_tensor(part.attention_mask.astype(np.int64), device=device),
           "loss_mask": torch.as_tensor(part.loss_mask, device=device)}
    for name in ("advantages", "ref_logprobs", "old_logprobs", "behaviour_logprobs"):
        value = getattr(part, name)
        if value is not None:
            out[name] = torch.as_tensor(value, device=device)
    return out


def forward(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, with_entropy: bool = False,
            chunk_tokens: int = 0, entropy_grad: bool = False,
            temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, T) token log-probs and, optionally, (B, T) entropies (with a gradient only if `entropy_grad`), of
    the distribution the rollout sampled from: softmax(logits / `temperature`).

    `chunk_tokens` > 0: from the final hidden states, that many positions at a time (no T x V logits
    held, each chunk recomputed in backward: kr1.training.chunked_logprobs); 0: from the full logits."""
    if chunk_tokens > 0:
        with chunked_output_head(model, input_ids, chunk_tokens, with_entropy, entropy_grad, temperature):
            out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        return out[..., 0], out[..., 1] if with_entropy else None
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    if temperature != 1.0:
        logits = logits / temperature
    logprobs = token_logprobs(logits, input_ids)
    entropy = token_entropy(logits if entropy_grad else logits.detach()) if with_entropy else None
    return logprobs, entropy


def _idle_pass(model: Any, device: torch.device, backward: bool) -> None:
    # a rank with no rows still joins the FSDP all-gathers (and reduce-scatters) of the others
    dummy = torch.zeros((1, 1), dtype=torch.long, device=device)
    logits = model(input_ids=dummy, attention_mask=torch.ones_like(dummy), use_cache=False).logits
    if backward:
        (logits.sum() * 0.0).backward()


@torch.no_grad()
def batch_logprobs(model: Any, batch: TrainBatch, micro_batches: Sequence[np.ndarray],
                   device: torch.device, chunk_tokens: int = 0, temperature: float = 1.0) -> np.ndarray:
    """(B, T) float32 log-probs of `batch` under `model` sampled at `temperature`, micro-batch by micro-batch."""
    model.eval()
    out = np.zeros(batch.input_ids.shape, dtype=np.float32)
    for rows in micro_batches:
        if len(rows) == 0:
            _idle_pass(model, device, backward=False)
            continue
        t = _tensors(batch, rows, device)
        logprobs, _ = forward(model, t["input_ids"], t["attention_mask"], chunk_tokens=chunk_tokens,
                              temperature=temperature)
        out[rows, :logprobs.shape[1]] = (logprobs * t["attention_mask"]).float().cpu().numpy()
    return out


def train_step(model: Any, optimizer: torch.optim.Optimizer, batch: TrainBatch, micro_batches: Sequence[np.ndarray],
               *, normalizer: float, scale: float, algo: AlgorithmConfig, grad_clip: float,
               device: torch.device, chunk_tokens: int = 0, temperature: float = 1.0) -> dict[str, float]:
    """One optimizer step: accumulate the token-mean loss over micro-batches, clip, step. Log-probs are those of
    the rollout's sampling distribution (`temperature`): at 1 on samples drawn at 0.7, the policy gradient
    pushes toward a distribution the samples did not come from, and a tiny policy's entropy blew up.

    `normalizer` is `loss_normalizer` of the whole step (all ranks); `scale` undoes
    the mean that data-parallel gradient reduction takes over ranks (the world size).
    Returned sums are this rank's share: adding them over ranks gives the step's values.
    """
    model.train()
    optimizer.zero_grad(set_to_none=True)
    totals = {"loss": 0.0, "pg_loss": 0.0, "kl": 0.0, "clip_fraction": 0.0, "entropy": 0.0}
    behaviour = batch.behaviour_logprobs is not None
    if behaviour:  # the decoupled objective's importance weights (max: combined by max, not summed)
        totals.update(behaviour_weight=0.0, behaviour_weight_max=0.0, behaviour_truncated=0.0)
    low = algo.clip_eps if algo.clip_eps_low is None else algo.clip_eps_low
    high = algo.clip_eps if algo.clip_eps_high is None else algo.clip_eps_high
    for rows in micro_batches:
        if len(rows) == 0:
            _idle_pass(model, device, backward=True)
            continue
        t = _tensors(batch, rows, device)
        logprobs, entropy = forward(model, t["input_ids"], t["attention_mask"], with_entropy=True,
                                    chunk_tokens=chunk_tokens, entropy_grad=algo.entropy_coef != 0,
                                    temperature=temperature)
        old = t.get("old_logprobs", logprobs.detach())
        out = policy_loss(logprobs=logprobs, old_logprobs=old, advantages=t["advantages"], loss_mask=t["loss_mask"],
                          clip_eps=low, clip_eps_high=high, normalizer=normalizer,
                          ref_logprobs=t.get("ref_logprobs"), kl_coef=algo.kl_coef, kl_estimator=algo.kl_estimator,
                          entropy=entropy, entropy_coef=algo.entropy_coef, loss_agg=algo.loss_agg,
                          behaviour_logprobs=t.get("behaviour_logprobs"), behaviour_clip=algo.behaviour_clip)
        (out.loss * scale).backward()
        totals["loss"] += out.loss.detach().item()
        for name in ("pg_loss", "kl", "clip_fraction", "entropy") + (("behaviour_weight", "behaviour_truncated")
                                                                     if behaviour else ()):
            totals[name] += getattr(out, name)
        if behaviour:
            totals["behaviour_weight_max"] = max(totals["behaviour_weight_max"], out.behaviour_weight_max)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    totals["grad_norm"] = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
    return totals
