"""Token log-probs and entropies from logits: the one definition that rollout and training share.

    logprobs = token_logprobs(logits, input_ids)     # (B, T), column 0 is 0
    entropy = token_entropy(logits)                  # (B, T)

The softmax runs in at least float32 (bf16/fp16 logits are upcast) and in float64 when the
logits are float64, so that parity tests can compare two paths where exactness is the point.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """`x` in float32, or in its own dtype when that is wider (float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) log p(token t | tokens before t) from (B, T, V) logits; column 0 is 0."""
    logp = torch.log_softmax(at_least_fp32(logits[:, :-1]), dim=-1)
    picked = logp.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return F.pad(picked, (1, 0))


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """(B, T) entropy of the distribution that produced token t; column 0 is 0."""
    logp = torch.log_softmax(at_least_fp32(logits[:, :-1]), dim=-1)
    return F.pad(-(logp.exp() * logp).sum(-1), (1, 0))
