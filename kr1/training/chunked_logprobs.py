"""Token log-probs and entropies computed chunk by chunk, so that no T x V logits tensor is ever held.

    with chunked_output_head(model, input_ids, chunk_tokens=2048):
        out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    logprobs, entropy = out[..., 0], out[..., 1]       # (B, T) each; column 0 is 0

For one forward call the model's output head (`lm_head`) is replaced by a function of the final
hidden states: for each chunk of `chunk_tokens` positions it computes logits = hidden @ W^T (+ b),
the fp32 log-softmax, the log-prob of the next token and, if asked, the entropy. While gradients are
on, every chunk runs under activation checkpointing: the backward pass recomputes the chunk's
logits instead of keeping them, as Liger's fused linear cross-entropy and verl's chunked entropy do.
The head runs inside the model's own forward, so under FSDP2 the root unit's gathered parameters
(`lm_head` among them) are there, and the result leaves through the model's output (`.logits`),
so FSDP2's backward hooks see the gradient arrive. Same values and gradients as the plain path
(`token_logprobs`, `token_entropy` over full logits): tests/training/test_chunked_logprobs.py.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from kr1.logprobs import at_least_fp32


def _chunk(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
           with_entropy: bool, entropy_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,) log-prob of each target and (N,) entropy (zeros when not asked), from (N, H) hidden states."""
    logp = torch.log_softmax(at_least_fp32(F.linear(hidden, weight, bias)), dim=-1)
    picked = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    if not with_entropy:
        return picked, torch.zeros_like(picked)
    dist = logp if entropy_grad else logp.detach()  # the entropy is a monitor unless it is in the loss
    return picked, -(dist.exp() * dist).sum(-1)


def chunked_token_logprobs(hidden: torch.Tensor, head: torch.nn.Module, input_ids: torch.Tensor, chunk_tokens: int,
                           with_entropy: bool = True, entropy_grad: bool = False) -> torch.Tensor:
    """(B, T, 2): log p(token t | before t) and the entropy of that distribution, column 0 zero, from
    (B, T, H) final hidden states, `chunk_tokens` positions at a time."""
    batch, length, width = hidden.shape
    flat = hidden[:, :-1].reshape(-1, width)
    targets = input_ids[:, 1:].reshape(-1)
    logprobs, entropies = [], []
    for start in range(0, flat.shape[0], chunk_tokens):
        args = (flat[start:start + chunk_tokens], head.weight, head.bias, targets[start:start + chunk_tokens],
                with_entropy, entropy_grad)
        picked, entropy = checkpoint(_chunk, *args, use_reentrant=False) if torch.is_grad_enabled() \
            else _chunk(*args)
        logprobs.append(picked)
        entropies.append(entropy)
    out = torch.stack([torch.cat(logprobs), torch.cat(entropies)], dim=-1).view(batch, length - 1, 2)
    return F.pad(out, (0, 0, 1, 0))


@contextlib.contextmanager
def chunked_output_head(model: Any, input_ids: torch.Tensor, chunk_tokens: int, with_entropy: bool = True,
                        entropy_grad: bool = False, temperature: float = 1.0) -> Iterator[None]:
    """During the block, `model(...).logits` is (B, T, 2) [log-prob, entropy] computed in chunks, of
    softmax(logits / temperature) (the head has no bias, so the hidden states are scaled instead)."""
    head = model.get_output_embeddings()
    if getattr(head, "bias", None) is not None and temperature != 1.0:
        raise ValueError("a temperature other than 1 needs an output head without bias for chunked log-probs")
    scale = 1.0 / temperature
    head.forward = lambda hidden: chunked_token_logprobs(hidden * scale if scale != 1.0 else hidden, head, input_ids,
                                                         chunk_tokens, with_entropy, entropy_grad)
    try:
        yield
    finally:
        del head.forward  # the class's own forward again
