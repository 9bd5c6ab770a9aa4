"""Policy weights as the object-store sync ships them: in the engines' dtype, in buckets of bounded size.

    parts = state_buckets(state_dict, torch.bfloat16, bucket_bytes=512 << 20)   # learner rank 0
    for part in parts: engine.load(part)                                        # each engine, bucket by bucket

FSDP2's master weights are fp32; an engine serving a bf16 model needs bf16, so casting before
shipping halves the bytes that cross the object store (and every engine's fetch). Buckets keep
what an engine holds at once to one bucket, not a second copy of the model.
"""

from __future__ import annotations

import torch


def state_buckets(state: dict[str, torch.Tensor], dtype: torch.dtype | None,
                  bucket_bytes: int) -> list[dict[str, torch.Tensor]]:
    """`state` with floating tensors cast to `dtype` (None: as they are), in order, in dicts of at most
    `bucket_bytes` (a tensor larger than that gets a bucket of its own)."""
    buckets: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in state.items():
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        nbytes = tensor.numel() * tensor.element_size()
        if buckets[-1] and size + nbytes > bucket_bytes:
            buckets.append({})
            size = 0
        buckets[-1][name] = tensor
        size += nbytes
    return buckets if buckets[0] else []
