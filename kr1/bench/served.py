"""Served retrieval benchmark: the pool behind HTTP (`kr1.serve`, Ray Serve) against the same pool in-process.

    rows = served_rows(corpus, queries, cache_dir)        # part of `python -m kr1.bench --only retrieval`

The queries are cut into batches (as the engines' QueryBatcher sends them) and `clients` threads send the batches
at once: to the 2-shard pool's `search` in this process, then through `HttpRetriever` to the same index served on
127.0.0.1 in Search-R1's protocol. Each side is warmed up once, then timed over every batch `repeats` times (the
best pass counts); q/s is queries over wall time, latency is each request's, batching wait excluded. Both must
return the same passages.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from kr1.bench.table import Row, met
from kr1.config import RetrieverConfig
from kr1.retrieval.http_client import HttpRetriever
from kr1.run.assets import index_of_corpus
from kr1.run.pools import start_index_pool
from kr1.run.serving import free_port, serve_index, stop_serving

SHARDS = 2


def _load(search: Callable[[Sequence[str]], Any], batches: Sequence[Sequence[str]], clients: int,
          repeats: int) -> tuple[float, np.ndarray, list]:
    """(best wall seconds over every batch, that pass's per-request seconds, the hits) with `clients` at once."""
    def timed(batch: Sequence[str]) -> tuple[float, Any]:
        start = time.perf_counter()
        hits = search(batch)
        return time.perf_counter() - start, hits

    best, latencies, hits = float("inf"), np.zeros(0), []
    with ThreadPoolExecutor(clients) as threads:
        list(threads.map(timed, batches))  # warm-up: connections, the replica, page cache
        for _ in range(repeats):
            start = time.perf_counter()
            results = list(threads.map(timed, batches))
            wall = time.perf_counter() - start
            if wall < best:
                best, latencies, hits = wall, np.array([r[0] for r in results]), [h for r in results for h in r[1]]
    return best, latencies, hits


def served_rows(corpus: Path, queries: Sequence[str], cache_dir: Path, clients: int = 8, batch: int = 16,
                repeats: int = 3, progress: Callable[[str], None] = lambda s: None) -> list[Row]:
    """One row: served q/s and p50/p95 request latency against the in-process pool's, goal at least 0.8x."""
    cores = os.cpu_count() or 1
    index = index_of_corpus(corpus, Path(cache_dir) / f"{Path(corpus).parent.name}-index{SHARDS}", SHARDS)
    cfg = RetrieverConfig(num_shards=SHARDS, top_k=3, num_cpus_per_shard=max(1, cores // SHARDS))
    queries = list(dict.fromkeys(queries))  # distinct: neither side saves work on repeats
    batches = [queries[i:i + batch] for i in range(0, len(queries), batch)]
    progress(f"retrieval: in-process pool, {clients} clients")
    pool = start_index_pool(cfg, index)
    try:
        pool_s, pool_lat, pool_hits = _load(pool.search, batches, clients, repeats)
    finally:
        pool.close()
    progress(f"retrieval: served pool (Ray Serve, HTTP), {clients} clients")
    url = serve_index(cfg, index, port=free_port())
    try:
        client = HttpRetriever(url, top_k=3, max_concurrency=clients)
        served_s, served_lat, served_hits = _load(client.search, batches, clients, repeats)
        client.close()
    finally:
        stop_serving()
    equal = [[h.id for h in row] for row in served_hits] == [[h.id for h in row] for row in pool_hits]
    pool_qps, served_qps = len(queries) / pool_s, len(queries) / served_s
    ms = lambda lat: f"p50 {1000 * np.percentile(lat, 50):.1f} / p95 {1000 * np.percentile(lat, 95):.1f} ms"  # noqa
    return [Row("retrieval", f"pool served over HTTP (kr1.serve) vs in-process, {clients} clients",
                f"{served_qps:,.0f} q/s", f"{pool_qps:,.0f} q/s", served_qps / pool_qps, ">= 0.8x",
                met(served_qps / pool_qps >= 0.8),
                f"requests of {batch} queries: served {ms(served_lat)}, in-process {ms(pool_lat)}; same passages: "
                f"{'yes' if equal else 'no'}; {len(queries):,} queries, {SHARDS} shards, top-3")]
