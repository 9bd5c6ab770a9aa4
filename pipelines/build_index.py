"""Build a sharded BM25 index from a JSONL corpus, shards in parallel as Ray tasks.

    python -m pipelines.build_index --corpus corpus.jsonl --out index_dir --shards 4

The corpus is JSONL in the wiki2018 layout (`id`, `title`, `text` or `id`, `contents`).
Each shard scores with the *global* document frequencies and average length, so
searching all shards and merging by score gives the single-index top-k. The output
directory appears complete or not at all (built aside, then renamed); it must be on
a file system that every Ray node writing a shard can see.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Sequence

import ray
from tqdm.auto import tqdm

from kr1.atomic_write import atomic_directory
from kr1.cluster import ensure_ray
from kr1.data import Passage, load_corpus
from kr1.errors import run_cli
from kr1.retrieval.index import (IndexManifest, ShardTokens, TokenizerSpec, merge_statistics, shard_bounds,
                                 tokenize_shard, write_shard)


@ray.remote
def _tokenize(passages: list[Passage], spec: TokenizerSpec) -> ShardTokens:
    return tokenize_shard([p.contents for p in passages], spec)


@ray.remote
def _summary(tokens: ShardTokens) -> ShardTokens:
    return tokens.summary()


@ray.remote
def _write(index_dir: str, shard: int, tokens: ShardTokens, stats: object, passages: list[Passage],
           k1: float, b: float) -> str:
    return str(write_shard(index_dir, shard, tokens, stats, passages, k1, b))  # type: ignore[arg-type]


def _wait_all(refs: list[ray.ObjectRef], bar: tqdm) -> list:
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        bar.update(len(done))
    return ray.get(refs)


def build_index(corpus: str | Path, out: str | Path, num_shards: int, k1: float = 1.5, b: float = 0.75,
                spec: TokenizerSpec = TokenizerSpec(), progress: bool = True) -> IndexManifest:
    """Index `corpus` into `num_shards` shards under `out` (replaced atomically)."""
    passages = load_corpus(corpus)
    bounds = shard_bounds(len(passages), num_shards)
    ensure_ray()
    passage_refs = [ray.put(passages[start:end]) for start, end in bounds]
    with tqdm(total=2 * num_shards, desc="build_index", unit="step", disable=not progress) as bar:
        token_refs = [_tokenize.remote(ref, spec) for ref in passage_refs]
        # only the small statistics travel to the driver; token streams stay in the object store
        stats = merge_statistics(_wait_all([_summary.remote(t) for t in token_refs], bar))
        stats_ref = ray.put(stats)
        with atomic_directory(Path(out)) as tmp:
            _wait_all([_write.remote(str(tmp), i, token_refs[i], stats_ref, passage_refs[i], k1, b)
                       for i in range(num_shards)], bar)
            manifest = IndexManifest(num_shards=num_shards, num_docs=stats.num_docs, vocab_size=len(stats.vocab),
                                     avg_doc_len=stats.avg_doc_len, shard_offsets=stats.shard_offsets, k1=k1, b=b,
                                     tokenizer=vars(spec).copy(), corpus=str(Path(corpus).resolve()))
            manifest.save(tmp)
    return manifest


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", required=True, type=Path, help="JSONL corpus (id, title, text | contents)")
    parser.add_argument("--out", required=True, type=Path, help="index directory to write")
    parser.add_argument("--shards", type=int, default=1, help="number of shards (one retriever actor each)")
    parser.add_argument("--k1", type=float, default=1.5)
    parser.add_argument("--b", type=float, default=0.75)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    manifest = build_index(args.corpus, args.out, args.shards, args.k1, args.b)
    print(f"indexed {manifest.num_docs} passages ({manifest.vocab_size} terms) into {manifest.num_shards} "
          f"shards at {args.out} in {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    run_cli(main)
