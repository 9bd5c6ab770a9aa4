"""Retriever actors: one `RetrieverShard` per index shard, and the pool that fans out to them.

    pool = RetrieverPool(index_dir, num_shards=2, top_k=3)        # starts one actor per shard
    hits = pool.search(["who directed the amber lantern", ...])  # list (per query) of Hit

A batch of queries, each distinct one once, is put in the object store and sent to every shard; each
shard returns its top-k with passages and the pool merges them by score (ties by
document index), which equals a single index's top-k. Shard actors restart when
they die and their calls are retried, so a lost shard costs latency, not a rollout.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Sequence

import ray

from kr1.cluster import actor_names, stop_actors
from kr1.retrieval.hits import BatchHits, Hit, merge_hits, query_key


class RetrieverShard:
    """One memory-mapped index shard; a plain class that `ray.remote` wraps where it is created."""

    def __init__(self, index_dir: str, shard: int, backend: str = "numba", threads: int = 1) -> None:
        from kr1.retrieval.scoring import ShardSearcher  # numba stays out of processes that only hold the pool

        self.shard = shard
        self.searcher = ShardSearcher(index_dir, shard, backend=backend, threads=threads)

    def __repr__(self) -> str:  # Ray shows this in the dashboard and log prefixes
        return f"RetrieverShard({self.shard})"

    def ready(self) -> int:
        """Number of documents this shard holds (also proves the actor is up)."""
        return self.searcher.num_docs

    def search(self, queries: Sequence[str], k: int, max_query_chars: int) -> list[list[Hit]]:
        return self.searcher.search(queries, k, max_query_chars)


class RetrieverPool:
    """All shards of one index as named Ray actors, searched together.

    The pool pickles as the shard actors' names, so other actors can hold it as a plain
    constructor argument (and get it back after a restart); handles are looked up on use.
    """

    def __init__(self, index_dir: str | Path, num_shards: int | None = None, top_k: int = 3,
                 backend: str = "numba", max_query_chars: int = 1000, num_cpus_per_shard: float = 1.0,
                 max_restarts: int = 3) -> None:
        from kr1.retrieval.index import BM25IndexError, check_index

        manifest = check_index(index_dir, num_shards)  # before any actor starts
        self.index_dir = str(index_dir)
        self.num_docs = manifest.num_docs
        self.top_k = top_k
        self.max_query_chars = max_query_chars
        self.lowercase = bool(manifest.tokenizer.get("lower", True))
        actor = ray.remote(RetrieverShard)
        threads = max(1, int(num_cpus_per_shard))
        self.names = actor_names("retriever-shard", manifest.num_shards)  # as the Ray dashboard lists them
        options = {"num_cpus": num_cpus_per_shard, "max_restarts": max_restarts, "max_task_retries": max_restarts}
        self._shards: list[Any] | None = [actor.options(name=n, **options).remote(self.index_dir, i, backend, threads)
                                          for i, n in enumerate(self.names)]
        sizes = ray.get([s.ready.remote() for s in self.shards])
        if sum(sizes) != manifest.num_docs:  # a shard rebuilt on its own would break global statistics
            raise BM25IndexError(f"{index_dir}: shards hold {sum(sizes)} documents, manifest says {manifest.num_docs}")

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_shards": None}

    @property
    def shards(self) -> list[Any]:
        if self._shards is None:
            self._shards = [ray.get_actor(n) for n in self.names]
        return self._shards

    def search_refs(self, queries: Sequence[str], k: int | None = None) -> list[ray.ObjectRef]:
        """Start the search on every shard; one ref per shard, for callers that overlap work."""
        queries_ref = ray.put(list(queries))
        return [s.search.remote(queries_ref, k or self.top_k, self.max_query_chars) for s in self.shards]

    def search(self, queries: Sequence[str], k: int | None = None) -> list[list[Hit]]:
        """Top-k hits for each query, merged across shards; a query repeated in the batch (samples of one prompt
        often open with the same search) is searched once (`BatchHits.unique` counts those searched)."""
        if not queries:
            return BatchHits([], 0)
        keys, distinct = self._keys(queries)
        return self._answer(keys, distinct, ray.get(self.search_refs(distinct, k)), k)

    async def search_async(self, queries: Sequence[str], k: int | None = None) -> list[list[Hit]]:
        """`search` for a caller on an asyncio loop (kr1.serve's endpoint): awaits the shards, holds no thread."""
        if not queries:
            return BatchHits([], 0)
        keys, distinct = self._keys(queries)
        return self._answer(keys, distinct, await asyncio.gather(*self.search_refs(distinct, k)), k)

    def _keys(self, queries: Sequence[str]) -> tuple[list[str], list[str]]:
        """Each query's key (what the index sees of it), and the distinct keys, in first-seen order."""
        keys = [query_key(q, self.max_query_chars, self.lowercase) for q in queries]
        return keys, list(dict.fromkeys(keys))

    def _answer(self, keys: list[str], distinct: list[str], per_shard: Sequence[Any], k: int | None) -> BatchHits:
        return BatchHits.of_distinct(keys, distinct, merge_hits(per_shard, k or self.top_k))

    def close(self) -> None:
        """Stop the shard actors (the pool is unusable afterwards)."""
        stop_actors(self.shards)
        self._shards, self.names = [], []
