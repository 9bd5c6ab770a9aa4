"""Build a sharded BM25 index from a JSONL corpus, in chunks and shards that run as Ray tasks.

    manifest = build_index("corpus.jsonl", "index_dir", num_shards=4, memory_budget=2 << 30)
    python -m pipelines.build_index --corpus corpus.jsonl --out index_dir --shards 4 --memory-budget 2G

The corpus is JSONL in the wiki2018 layout (`id`, `title`, `text` or `id`, `contents`), plain
or gzipped. Pass 1 tokenises byte-range chunks of it in parallel (every bad row is found here,
before any shard is written); the vocabularies merge into the global one; pass 2 writes each
shard from its chunks' postings. No process holds more than `memory_budget` of it (Ray is
told so, and runs no more tasks at once than the node's memory holds). Each shard scores with
the *global* document frequencies and average length, so searching all shards and merging by
score gives the single-index top-k. The output directory appears complete or not at all (built
aside, then renamed); it must be on a file system that every Ray node running a task can see.
The steps themselves are pure (kr1/retrieval/chunked_build.py, kr1/retrieval/index_build.py);
this module only fans them out.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import bm25s
import numpy as np
import ray
from tqdm.auto import tqdm

from kr1.atomic_write import atomic_directory, write_json
from kr1.cluster import ensure_ray
from kr1.data import DataError
from kr1.retrieval.chunked_build import (WRITER_BYTES_PER_POSTING, ChunkRun, CorpusChunk, GlobalVocabulary,
                                         corpus_chunks, group_chunks, merge_vocabularies, peak_rss, tokenize_chunk,
                                         write_shard)
from kr1.retrieval.index import IndexManifest, TokenizerSpec
from kr1.retrieval.index_build import (BUILD_RECORD, DEFAULT_MEMORY_BUDGET, BuildError, check_gzip_header, check_rows,
                                       chunk_bytes, plain_corpus)


# max_calls=1: each task in a fresh worker, so its memory is returned to the node and its peak is its own
@ray.remote(num_cpus=1, max_calls=1)
def _tokenize(corpus: str, chunk: CorpusChunk, spec: TokenizerSpec, work_dir: str) -> tuple[ChunkRun, int]:
    return tokenize_chunk(corpus, chunk, spec, work_dir), peak_rss()


@ray.remote(num_cpus=1, max_calls=1)
def _write(index_dir: str, shard: int, runs: list[ChunkRun], vocab: GlobalVocabulary, k1: float, b: float,
           block_postings: int) -> int:
    write_shard(index_dir, shard, runs, vocab, k1, b, block_postings, bm25s.__version__)
    return peak_rss()


def _wait_all(refs: list[ray.ObjectRef], bar: tqdm) -> list:
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        bar.update(len(done))
    return ray.get(refs)


def build_index(corpus: str | Path, out: str | Path, num_shards: int, k1: float = 1.5, b: float = 0.75,
                spec: TokenizerSpec = TokenizerSpec(), progress: bool = True,
                memory_budget: int = DEFAULT_MEMORY_BUDGET) -> IndexManifest:
    """Index `corpus` into `num_shards` shards under `out` (replaced atomically), each build task within
    `memory_budget` bytes."""
    corpus = Path(corpus)
    if not corpus.is_file():
        raise DataError(f"{corpus}: corpus file not found")
    if num_shards < 1:
        raise BuildError(f"number of shards must be at least 1, got {num_shards}")
    check_gzip_header(corpus)
    start = time.perf_counter()
    ensure_ray()
    largest = max((n["Resources"].get("memory", 0) for n in ray.nodes() if n["Alive"]), default=0)
    if memory_budget > largest:  # Ray would wait for a node that can hold a task, forever
        raise BuildError(f"--memory-budget {memory_budget / 2**30:.2f} GiB is more than any Ray node offers "
                         f"({largest / 2**30:.2f} GiB): give a smaller one")
    with atomic_directory(Path(out)) as tmp:
        work = tmp / "_build"  # the chunks' runs: removed before the index appears
        work.mkdir()
        source = plain_corpus(corpus, work)
        chunk_size = chunk_bytes(source.stat().st_size, num_shards, memory_budget)
        chunks = corpus_chunks(source, chunk_size)
        if not chunks:
            raise DataError(f"{corpus}: corpus is empty")
        if len(chunks) < num_shards:  # each shard needs a chunk: refused now, not after a task per line
            raise BuildError(f"{corpus}: {num_shards} shards, but its lines split into only {len(chunks)} chunks "
                             f"(a shard needs at least one): use fewer shards (at most {len(chunks)})")
        task = {"memory": memory_budget}  # Ray starts no more of them at once than the node's memory holds
        with tqdm(total=len(chunks) + num_shards, desc="build_index", unit="task", disable=not progress) as bar:
            tokenized = _wait_all([_tokenize.options(**task).remote(str(source), c, spec, str(work))
                                   for c in chunks], bar)
            runs = [run for run, _ in tokenized]
            check_rows(runs, corpus, source)
            num_docs = sum(r.num_docs for r in runs)
            try:
                groups = group_chunks([r.num_docs for r in runs], num_shards)
            except ValueError as e:  # more shards than the corpus has documents, or chunks
                raise BuildError(f"{corpus}: {e}") from None
            vocab = merge_vocabularies(runs, work)
            vocab_ref = ray.put(vocab)  # the object store holds this alone: the idf array and a path
            block = max(1, memory_budget // WRITER_BYTES_PER_POSTING)
            written = _wait_all([_write.options(**task).remote(str(tmp), i, runs[a:z], vocab_ref, k1, b, block)
                                 for i, (a, z) in enumerate(groups)], bar)
        shutil.rmtree(work)
        write_json(tmp / BUILD_RECORD, {
            "seconds": round(time.perf_counter() - start, 2), "passages": num_docs, "terms": vocab.size,
            "chunks": len(chunks), "chunk_bytes": chunk_size, "memory_budget": memory_budget,
            "peak_rss_driver": peak_rss(), "peak_rss_tokenize": max(peak for _, peak in tokenized),
            "peak_rss_write": max(written), "object_store_bytes": int(vocab.idf.nbytes)})
        offsets = np.cumsum([0] + [sum(r.num_docs for r in runs[a:z]) for a, z in groups]).tolist()
        manifest = IndexManifest(num_shards=num_shards, num_docs=num_docs, vocab_size=vocab.size,
                                 avg_doc_len=vocab.avg_doc_len, shard_offsets=offsets, k1=k1, b=b,
                                 tokenizer=vars(spec).copy(), corpus=str(corpus.resolve()))
        manifest.save(tmp)
    return manifest
