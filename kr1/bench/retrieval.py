"""Retrieval benchmark: kr1's Ray retriever pool against one in-process bm25s index and rank_bm25.

    rows = retrieval_rows(corpus, queries, cache_dir)        # part of `python -m kr1.bench`

The same corpus and queries (top-3) go to the pool with 1, 2 and 4 shards, to bm25s's
own BM25 over the whole corpus (numba backend, every core) and to rank_bm25's BM25Okapi
(slow: timed on a subset of the queries). Every system returns the passages, not only
their ids. The pool's top-k ids are checked against kr1's single-shard index. The
indexes are built once per corpus under the cache directory and reused.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from kr1.bench.table import Row, met
from kr1.config import RetrieverConfig
from kr1.data import load_corpus
from kr1.retrieval.index import IndexManifest
from kr1.retrieval.scoring import ShardSearcher
from kr1.run.assets import index_of_corpus
from kr1.run.pools import start_retriever

SHARD_COUNTS = (1, 2, 4)


def best_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Fastest wall time of `repeats` calls (after one warm-up call), and the last result."""
    result = fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def _bm25s_search(passages: Sequence[Any], spec: Any) -> Callable[[Sequence[str]], Any]:
    """bm25s's own index over the whole corpus; the returned function tokenises, retrieves top-3 and
    returns (scores, passages) as the pool does."""
    import logging

    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)

    model = bm25s.BM25(k1=1.5, b=0.75, method="lucene", backend="numba")
    model.index(spec.tokenize([p.contents for p in passages]), show_progress=False)
    rows = [p.to_row() for p in passages]
    threads = os.cpu_count() or 1

    def search(queries: Sequence[str]) -> Any:
        docs, scores = model.retrieve(spec.tokenize(queries), k=3, n_threads=threads, show_progress=False)
        return scores, [[rows[d] for d in row] for row in docs.tolist()]

    return search


def _rank_bm25_search(passages: Sequence[Any], spec: Any) -> Callable[[Sequence[str]], list[list[int]]]:
    from rank_bm25 import BM25Okapi

    model = BM25Okapi(spec.tokenize([p.contents for p in passages]))

    def search(queries: Sequence[str]) -> list[list[int]]:
        out = []
        for tokens in spec.tokenize(queries):
            scores = model.get_scores(tokens)
            top = np.argpartition(-scores, 2)[:3]
            out.append(top[np.argsort(-scores[top])].tolist())
        return out

    return search


def retrieval_rows(corpus: Path, queries: Sequence[str], cache_dir: Path, rank_bm25_queries: int = 20,
                   repeats: int = 3, progress: Callable[[str], None] = lambda s: None,
                   corpus_kind: str = "") -> list[Row]:
    """Queries per second of each system on the same corpus and queries, as table rows; `corpus_kind` names the
    corpus and its queries in the notes ("wiki-like")."""
    cores = os.cpu_count() or 1
    queries = list(queries)
    progress("retrieval: kr1 indexes")
    indexes = {n: index_of_corpus(corpus, Path(cache_dir) / f"{Path(corpus).parent.name}-index{n}", n)
               for n in SHARD_COUNTS}
    spec = IndexManifest.load(indexes[1]).tokenizer_spec
    reference, reference_scores = ShardSearcher(indexes[1], 0).top_k(queries, 3)  # kr1's 1-shard index
    pool_qps, equal = {}, {}
    for n, index in indexes.items():
        progress(f"retrieval: pool, {n} shard(s)")
        pool = start_retriever(RetrieverConfig(num_shards=n, top_k=3), index, num_cpus_per_shard=max(1, cores // n))
        try:
            seconds, hits = best_time(lambda: pool.search(queries), repeats)
        finally:
            pool.close()
        pool_qps[n] = len(queries) / seconds
        equal[n] = all([h.index for h in row] == [int(d) for d in ref if d >= 0] for row, ref in zip(hits, reference))
    progress("retrieval: bm25s")
    passages = load_corpus(corpus)
    bm25s_search = _bm25s_search(passages, spec)
    seconds, (bm25s_scores, _) = best_time(lambda: bm25s_search(queries), repeats)
    bm25s_qps = len(queries) / seconds
    # the same Lucene BM25: equal top-3 scores (which of several tied passages comes first may differ)
    agree = float(np.mean(np.isclose(bm25s_scores, reference_scores, rtol=1e-5).all(axis=1)))
    progress("retrieval: rank_bm25")
    subset = queries[:rank_bm25_queries]
    rank_search = _rank_bm25_search(passages, spec)
    seconds, _ = best_time(lambda: rank_search(subset), 1)
    rank_qps = len(subset) / seconds

    kind = f"{corpus_kind} " if corpus_kind else ""
    size = f"{len(passages):,} {kind}passages, {len(queries):,} {kind}queries, top-3"
    rows = [Row("retrieval", f"pool, {n} shard{'s' * (n > 1)} vs bm25s in-process", f"{qps:,.0f} q/s",
                f"{bm25s_qps:,.0f} q/s", qps / bm25s_qps, ">= 0.8x", met(qps / bm25s_qps >= 0.8),
                f"top-k equal to the 1-shard index: {'yes' if equal[n] else 'no'}; {size}; "
                f"{max(1, cores // n)} thread(s) per shard"
                + (f"; bm25s's top-3 scores equal kr1's on {100 * agree:.1f}% of queries" if n == 1 else ""))
            for n, qps in pool_qps.items()]
    best = max(pool_qps, key=pool_qps.get)
    rows.append(Row("retrieval", f"pool ({best} shard{'s' * (best > 1)}) vs rank_bm25 BM25Okapi",
                    f"{pool_qps[best]:,.0f} q/s", f"{rank_qps:,.2f} q/s", pool_qps[best] / rank_qps, "> 100x",
                    met(pool_qps[best] / rank_qps > 100), f"rank_bm25 timed on {len(subset)} of the queries"))
    return rows
