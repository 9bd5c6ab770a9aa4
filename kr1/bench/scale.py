"""Retrieval at scale: kr1's chunked index build and its retriever pool on wiki-like corpora of millions of passages.

    rows = scale_rows([1_000_000, 2_000_000, 4_000_000], cache_dir)     # `python -m kr1.bench --only scale`

Per size, a wiki-like corpus (`kr1.retrieval.wiki_like`, built once under the cache directory)
is indexed into 2 shards by `python -m pipelines.build_index` in a child process: its wall time,
the child's peak memory (the head node's share) and each build task's (its `build.json`), the
index's bytes on disk per passage, and the resident memory of one loaded shard after a batch of
queries. On the largest size the pool answers the same queries with 1, 2 and 4 shards, beside
bm25s's own in-process retrieval over the same 1-shard matrix; on the smallest, bm25s's own
`index()` (tokenising included) is the build's baseline. Then the growth from the smallest to
the largest size, and the projection to wiki-18's 21,015,324 passages.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from kr1.bench.retrieval import best_time
from kr1.bench.table import Row, met
from kr1.config import RetrieverConfig
from kr1.run.pools import start_retriever

WIKI18_PASSAGES = 21_015_324
BUILD_SHARDS = 2  # the shard count of the memory and time rows
POOL_SHARDS = (1, 2, 4)
GIB = 2 ** 30

# a loaded shard's memory after a batch of queries, measured in a child process (nothing else in its heap)
_LOADED_SHARD = """
import json, sys
from kr1.retrieval.scoring import ShardSearcher
searcher = ShardSearcher(sys.argv[1], 0)
searcher.search(json.loads(sys.argv[2]), 3)
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({k: int(status[k].split()[0]) * 1024 for k in ("VmRSS", "RssAnon", "RssFile", "VmHWM")}))
"""

# bm25s's own build on the same corpus and tokenizer settings, timed in a child process
_BM25S_BUILD = """
import json, sys, time
import bm25s
from kr1.data import iter_corpus
from kr1.retrieval.index import TokenizerSpec
from kr1.retrieval.chunked_build import peak_rss
start = time.perf_counter()
texts = [p.contents for _, p in iter_corpus(sys.argv[1])]
model = bm25s.BM25(method="lucene")
model.index(TokenizerSpec().tokenize(texts), show_progress=False)
print(json.dumps({"seconds": time.perf_counter() - start, "passages": len(texts), "peak_rss": peak_rss()}))
"""


def _child(args: Sequence[str]) -> str:
    """Run a Python child joined to this Ray; its stdout."""
    import ray

    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    done = subprocess.run([sys.executable, *args], capture_output=True, env=env, text=True)
    if done.returncode:
        lines = done.stderr.strip().splitlines()
        raise RuntimeError(f"{' '.join(args[:3])} failed: {lines[-1] if lines else done.returncode}")
    return done.stdout


def _build(corpus: Path, out: Path, shards: int) -> dict:
    """`python -m pipelines.build_index` into `out` in a child process (so the driver's peak memory is the
    build's alone); its build record and the index's bytes on disk."""
    _child(["-m", "pipelines.build_index", "--corpus", str(corpus), "--out", str(out), "--shards", str(shards)])
    record = json.loads((out / "build.json").read_text())
    record["disk_bytes"] = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return record


def _gib(value: float) -> str:
    return f"{value / GIB:.2f} GiB"


def _power_fit(sizes: Sequence[int], values: Sequence[float], target: int) -> float:
    """Extrapolate `values(sizes)` to `target` along the power law through the smallest and largest size."""
    if len(sizes) < 2 or min(values) <= 0:
        return values[-1] * target / sizes[-1]
    slope = np.log(values[-1] / values[0]) / np.log(sizes[-1] / sizes[0])
    return float(values[-1] * (target / sizes[-1]) ** slope)


def scale_rows(sizes: Sequence[int], cache_dir: Path, queries: int = 2000,
               progress: Callable[[str], None] = lambda s: None) -> list[Row]:
    """The scale benchmark's rows for corpora of `sizes` passages (ascending)."""
    from kr1.retrieval.scoring import ShardSearcher
    from kr1.retrieval.wiki_like import generate, wiki_like_queries

    sizes, cores = sorted(sizes), os.cpu_count() or 1
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    asked = wiki_like_queries(queries)
    records, rows = {}, []
    for n in sizes:
        corpus = cache_dir / f"wiki_like-{n}.jsonl"
        if not corpus.is_file():
            progress(f"scale: writing {n:,} passages")
            generate(corpus, n, progress=False)
        progress(f"scale: building {n:,} passages")
        out = cache_dir / f"wiki_like-{n}-index{BUILD_SHARDS}"
        start = time.perf_counter()
        record = _build(corpus, out, BUILD_SHARDS)
        record["wall"] = time.perf_counter() - start
        loaded = _child(["-c", _LOADED_SHARD, str(out), json.dumps(asked[:200])])
        record["loaded"] = json.loads(loaded)
        records[n] = record
        peak = max(record["peak_rss_driver"], record["peak_rss_tokenize"], record["peak_rss_write"])
        rows.append(Row("scale", f"build, {n:,} passages, {BUILD_SHARDS} shards", f"{record['wall']:.0f} s",
                        "-", n / record["wall"], "-", "-",
                        f"{n / record['wall']:,.0f} passages/s (ratio); {record['terms']:,} terms; "
                        f"{record['chunks']} chunks; peak memory: driver {_gib(record['peak_rss_driver'])}, "
                        f"tokenize task {_gib(record['peak_rss_tokenize'])}, write task "
                        f"{_gib(record['peak_rss_write'])}; object store {record['object_store_bytes'] / 2**20:.0f} "
                        f"MiB; {record['disk_bytes'] / n:,.0f} bytes on disk per passage; one loaded shard "
                        f"{_gib(record['loaded']['VmRSS'])} resident ({_gib(record['loaded']['RssAnon'])} heap)"))
        rows.append(Row("scale", f"build peak memory, {n:,} passages", _gib(peak), "-", peak / GIB, "<= 4 GiB",
                        met(peak <= 4 * GIB), "the largest of the driver and every build task"))
    first, last = sizes[0], sizes[-1]
    peaks = {n: max(r["peak_rss_driver"], r["peak_rss_tokenize"], r["peak_rss_write"]) for n, r in records.items()}
    if len(sizes) > 1:
        growth = peaks[last] / peaks[first]
        rows.append(Row("scale", f"build peak memory growth, {first:,} -> {last:,} passages",
                        f"{_gib(peaks[first])} -> {_gib(peaks[last])}", "-", growth, "<= 1.2x", met(growth <= 1.2),
                        f"corpus {last / first:.0f}x"))

    progress(f"scale: bm25s index() on {first:,} passages")
    built = _child(["-c", _BM25S_BUILD, str(cache_dir / f"wiki_like-{first}.jsonl")])
    bm25s_build = json.loads(built)
    ours, theirs = first / records[first]["wall"], bm25s_build["passages"] / bm25s_build["seconds"]
    rows.append(Row("scale", f"build throughput, {first:,} passages", f"{ours:,.0f} passages/s",
                    f"{theirs:,.0f} passages/s", ours / theirs, ">= 1x", met(ours >= theirs),
                    f"bm25s tokenize + index() in one process (peak {_gib(bm25s_build['peak_rss'])}); kr1: "
                    f"build_index, {BUILD_SHARDS} shards, every core"))

    progress(f"scale: pool on {last:,} passages")
    corpus = cache_dir / f"wiki_like-{last}.jsonl"
    indexes = {s: cache_dir / f"wiki_like-{last}-index{s}" for s in POOL_SHARDS}
    for s, index in indexes.items():
        if s != BUILD_SHARDS:
            _build(corpus, index, s)
    reference, reference_scores = ShardSearcher(indexes[1], 0).top_k(asked, 3)
    pool_qps, equal = {}, {}
    for s, index in indexes.items():
        pool = start_retriever(RetrieverConfig(num_shards=s, top_k=3), index, num_cpus_per_shard=max(1, cores // s))
        try:
            seconds, hits = best_time(lambda: pool.search(asked), 3)
        finally:
            pool.close()
        pool_qps[s] = len(asked) / seconds
        equal[s] = all([h.index for h in row] == [int(d) for d in ref if d >= 0] for row, ref in zip(hits, reference))
    bm25s_qps, agree = _bm25s_in_process(indexes[1], asked, cores, reference_scores)
    for s, qps in pool_qps.items():
        rows.append(Row("scale", f"pool, {s} shard{'s' * (s > 1)}, {last:,} passages vs bm25s in-process",
                        f"{qps:,.0f} q/s", f"{bm25s_qps:,.0f} q/s", qps / bm25s_qps, ">= 0.8x",
                        met(qps / bm25s_qps >= 0.8),
                        f"top-3 equal to the 1-shard index: {'yes' if equal[s] else 'no'}; {len(asked):,} wiki-like "
                        f"queries" + (f"; bm25s's top-3 scores equal kr1's on {100 * agree:.1f}% of queries"
                                      if s == 1 else "")))
    rows += _projection(records, pool_qps, last, cores)
    return rows


def _bm25s_in_process(index: Path, queries: Sequence[str], cores: int,
                      reference_scores: np.ndarray) -> tuple[float, float]:
    """bm25s's own retrieval (numba, every core) over kr1's 1-shard matrix, memory-mapped as the pool's shards
    are; (queries/s with the passages read, share of queries whose top-3 scores equal kr1's)."""
    import logging

    import bm25s

    from kr1.retrieval.index import IndexManifest

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    model = bm25s.BM25.load(index / "shard_000", mmap=True, load_corpus=True, show_progress=False,
                            override_params={"backend": "numba"})
    spec = IndexManifest.load(index).tokenizer_spec

    def search() -> np.ndarray:  # with its corpus loaded, bm25s returns the passages, as the pool does
        _, scores = model.retrieve(spec.tokenize(queries), k=3, n_threads=cores, show_progress=False,
                                   backend_selection="numba")
        return scores

    seconds, scores = best_time(search, 3)
    agree = float(np.mean(np.isclose(scores, reference_scores, rtol=1e-5).all(axis=1)))
    return len(queries) / seconds, agree


def _projection(records: dict[int, dict], pool_qps: dict[int, float], measured: int, cores: int) -> list[Row]:
    """wiki-18 planned from the measured sizes: power-law growth through the smallest and largest."""
    sizes = sorted(records)
    target = WIKI18_PASSAGES

    def fit(key: Callable[[dict], float]) -> float:
        return _power_fit(sizes, [key(records[n]) for n in sizes], target)

    head = fit(lambda r: r["peak_rss_driver"])
    task = fit(lambda r: max(r["peak_rss_tokenize"], r["peak_rss_write"]))
    shard = fit(lambda r: r["loaded"]["VmRSS"]) * BUILD_SHARDS  # one shard of a 1-shard index
    disk = fit(lambda r: r["disk_bytes"])
    core_minutes = fit(lambda r: r["wall"]) * min(cores, 2 * BUILD_SHARDS) / 60
    qps_one = pool_qps[1] * measured / target  # a query's work grows with the postings it reads: ~ passages
    return [Row("scale", "projection to wiki-18 (21,015,324 passages)", f"build {core_minutes:,.0f} core-minutes",
                "-", core_minutes, "-", "-",
                f"head node {_gib(head)} for the build; each build task {_gib(task)}; index {disk / 2**30:,.0f} GiB "
                f"on disk; a worker holding 1 of S shards ~{_gib(shard)}/S resident; pool ~{qps_one:,.0f} q/s on "
                f"1 shard ({cores} cores), about S times that on S shards of their own cores; fits through "
                f"{', '.join(f'{n:,}' for n in sizes)} passages")]


def clear(cache_dir: Path) -> None:
    """Remove the scale benchmark's corpora and indexes (several GiB at full size)."""
    for path in Path(cache_dir).glob("wiki_like-*"):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
