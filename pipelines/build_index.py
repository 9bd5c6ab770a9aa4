"""Build a sharded BM25 index from a JSONL corpus, in chunks and shards that run as Ray tasks.

    python -m pipelines.build_index --corpus corpus.jsonl --out index_dir --shards 4 --memory-budget 2G

The corpus is JSONL in the wiki2018 layout (`id`, `title`, `text` or `id`, `contents`), plain
or gzipped. Pass 1 tokenises byte-range chunks of it in parallel (every bad row is found here,
before any shard is written); the vocabularies merge into the global one; pass 2 writes each
shard from its chunks' postings. No process holds more than `--memory-budget` of it (Ray is
told so, and runs no more tasks at once than the node's memory holds). Each shard scores with
the *global* document frequencies and average length, so searching all shards and merging by
score gives the single-index top-k. The output directory appears complete or not at all (built
aside, then renamed); it must be on a file system that every Ray node running a task can see.
"""

from __future__ import annotations

import argparse
import gzip
import re
import shutil
import time
from pathlib import Path
from typing import Sequence

import bm25s
import numpy as np
import ray
from tqdm.auto import tqdm

from kr1.atomic_write import atomic_directory, write_json
from kr1.cluster import ensure_ray
from kr1.data import GZIP_ERRORS, DataError, iter_corpus
from kr1.errors import UserError, run_cli
from kr1.retrieval.chunked_build import (PASS1_BYTES_PER_CORPUS_BYTE, WRITER_BYTES_PER_POSTING, ChunkRun,
                                         CorpusChunk, GlobalVocabulary, corpus_chunks, group_chunks, id_hash,
                                         merge_vocabularies, peak_rss, tokenize_chunk, write_shard)
from kr1.retrieval.index import IndexManifest, TokenizerSpec

# what one build task may hold: fits an 8 GiB worker running two of them beside the Ray daemons
DEFAULT_MEMORY_BUDGET = 2 << 30
# what the build used, beside the manifest: wall time, chunks, each kind of process's peak memory
BUILD_RECORD = "build.json"
# chunks per shard at least, so that shards of whole chunks hold near-equal numbers of passages
CHUNKS_PER_SHARD = 4
MIN_CHUNK_BYTES = 16 << 20


# max_calls=1: each task in a fresh worker, so its memory is returned to the node and its peak is its own
@ray.remote(num_cpus=1, max_calls=1)
def _tokenize(corpus: str, chunk: CorpusChunk, spec: TokenizerSpec, work_dir: str) -> tuple[ChunkRun, int]:
    return tokenize_chunk(corpus, chunk, spec, work_dir), peak_rss()


@ray.remote(num_cpus=1, max_calls=1)
def _write(index_dir: str, shard: int, runs: list[ChunkRun], vocab: GlobalVocabulary, k1: float, b: float,
           block_postings: int) -> int:
    write_shard(index_dir, shard, runs, vocab, k1, b, block_postings, bm25s.__version__)
    return peak_rss()


class BuildError(UserError, ValueError):
    """A build that cannot run as asked: a shard count or memory budget the corpus or the cluster cannot meet."""


def _wait_all(refs: list[ray.ObjectRef], bar: tqdm) -> list:
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        bar.update(len(done))
    return ray.get(refs)


def _plain_corpus(corpus: Path, work: Path) -> Path:
    """The corpus as a plain file that byte ranges can split: a gzipped one is decompressed into `work`."""
    if corpus.suffix != ".gz":
        return corpus
    plain = work / corpus.name.removesuffix(".gz")
    with gzip.open(corpus, "rb") as source, open(plain, "wb") as out:
        try:
            shutil.copyfileobj(source, out, 1 << 20)
        except GZIP_ERRORS as e:  # cut short or corrupt past its header
            raise DataError(f"{corpus}: not a readable gzip file ({e})") from None
    return plain


def _check_gzip_header(corpus: Path) -> None:
    """A `.gz` corpus that is not gzip at all fails here, before Ray starts and anything is written."""
    with open(corpus, "rb") as handle:
        if corpus.suffix == ".gz" and handle.read(2) != b"\x1f\x8b":
            raise DataError(f"{corpus}: not a gzip file, though its name ends in .gz")


def _check_rows(runs: Sequence[ChunkRun], corpus: Path, source: Path) -> None:
    """The first bad row in file order, numbered within the file; then an empty corpus; then a repeated id."""
    line = 0
    for run in runs:
        if run.error is not None:
            raise DataError(f"{corpus}: row {line + run.error_row}: {run.error}")
        line += run.num_lines
    if not sum(r.num_docs for r in runs):
        raise DataError(f"{corpus}: corpus is empty")
    hashes = np.concatenate([np.load(Path(r.path) / "ids.npy") for r in runs])
    ordered = np.sort(hashes)
    if len(ordered) and np.any(ordered[1:] == ordered[:-1]):  # rare: confirm by the ids themselves, and name the row
        seen: set[str] = set()
        suspects = set(ordered[1:][ordered[1:] == ordered[:-1]].tolist())
        for number, passage in iter_corpus(source):
            if id_hash(passage.id) in suspects:
                if passage.id in seen:
                    raise DataError(f"{corpus}: row {number}: field 'id' {passage.id!r} is repeated")
                seen.add(passage.id)


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
    _check_gzip_header(corpus)
    start = time.perf_counter()
    ensure_ray()
    largest = max((n["Resources"].get("memory", 0) for n in ray.nodes() if n["Alive"]), default=0)
    if memory_budget > largest:  # Ray would wait for a node that can hold a task, forever
        raise BuildError(f"--memory-budget {memory_budget / 2**30:.2f} GiB is more than any Ray node offers "
                         f"({largest / 2**30:.2f} GiB): give a smaller one")
    with atomic_directory(Path(out)) as tmp:
        work = tmp / "_build"  # the chunks' runs: removed before the index appears
        work.mkdir()
        source = _plain_corpus(corpus, work)
        size = source.stat().st_size
        # within the budget; several per shard for balance, but not so small that starting tasks dominates
        balanced = max(MIN_CHUNK_BYTES, -(-size // (CHUNKS_PER_SHARD * num_shards)))
        chunk_bytes = max(1, min(memory_budget // PASS1_BYTES_PER_CORPUS_BYTE, balanced, -(-size // num_shards)))
        chunks = corpus_chunks(source, chunk_bytes)
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
            _check_rows(runs, corpus, source)
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
            "chunks": len(chunks), "chunk_bytes": chunk_bytes, "memory_budget": memory_budget,
            "peak_rss_driver": peak_rss(), "peak_rss_tokenize": max(peak for _, peak in tokenized),
            "peak_rss_write": max(written), "object_store_bytes": int(vocab.idf.nbytes)})
        offsets = np.cumsum([0] + [sum(r.num_docs for r in runs[a:z]) for a, z in groups]).tolist()
        manifest = IndexManifest(num_shards=num_shards, num_docs=num_docs, vocab_size=vocab.size,
                                 avg_doc_len=vocab.avg_doc_len, shard_offsets=offsets, k1=k1, b=b,
                                 tokenizer=vars(spec).copy(), corpus=str(corpus.resolve()))
        manifest.save(tmp)
    return manifest


def parse_bytes(text: str) -> int:
    """`2G`, `512M`, `64K` or a plain number of bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 2G, 512M)")
    return int(float(match[1]) * 1024 ** ("KMGT".find(match[2].upper()) + 1 if match[2] else 0))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", required=True, type=Path, help="JSONL corpus (id, title, text | contents)")
    parser.add_argument("--out", required=True, type=Path, help="index directory to write")
    parser.add_argument("--shards", type=int, default=1, help="number of shards (one retriever actor each)")
    parser.add_argument("--k1", type=float, default=1.5)
    parser.add_argument("--b", type=float, default=0.75)
    parser.add_argument("--memory-budget", type=parse_bytes, default=DEFAULT_MEMORY_BUDGET,
                        help="most memory one build task may use (default 2G)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    manifest = build_index(args.corpus, args.out, args.shards, args.k1, args.b, memory_budget=args.memory_budget)
    print(f"indexed {manifest.num_docs} passages ({manifest.vocab_size} terms) into {manifest.num_shards} "
          f"shards at {args.out} in {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    run_cli(main)
