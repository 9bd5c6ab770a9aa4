"""Weights as the object-store sync ships them: cast to the engines' dtype, in order, in bounded buckets."""

from __future__ import annotations

import torch

from kr1.training.weight_buckets import state_buckets


def _state():
    return {"a": torch.ones(256, dtype=torch.float32), "b": torch.ones(1024, dtype=torch.float32),
            "steps": torch.tensor([3], dtype=torch.int64), "c": torch.ones(100, dtype=torch.float32)}


def test_buckets_keep_order_and_bound_their_size():
    parts = state_buckets(_state(), None, bucket_bytes=2048)
    assert [list(p) for p in parts] == [["a"], ["b"], ["steps", "c"]]  # b alone exceeds a bucket: its own
    merged = {k: v for p in parts for k, v in p.items()}
    assert all(torch.equal(merged[k], v) for k, v in _state().items())


def test_a_bf16_engine_gets_half_the_bytes_and_integers_stay_integers():
    parts = state_buckets(_state(), torch.bfloat16, bucket_bytes=1 << 20)
    merged = {k: v for p in parts for k, v in p.items()}
    assert len(parts) == 1 and merged["a"].dtype == torch.bfloat16 and merged["steps"].dtype == torch.int64
    fp32 = sum(v.numel() * v.element_size() for k, v in _state().items() if k != "steps")
    assert sum(v.numel() * v.element_size() for k, v in merged.items() if k != "steps") * 2 == fp32


def test_nothing_in_nothing_out():
    assert state_buckets({}, torch.bfloat16, 1024) == []
