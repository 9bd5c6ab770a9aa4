"""Build a sharded BM25 index from a JSONL corpus, in chunks and shards that run as Ray tasks.

    python -m pipelines.build_index --corpus corpus.jsonl --out index_dir --shards 4 --memory-budget 2G

A thin main over `kr1.run.index_build.build_index` (the two passes, the memory budget and the atomic
output directory are described there). The corpus is JSONL in the wiki2018 layout (`id`, `title`,
`text` or `id`, `contents`), plain or gzipped.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path
from typing import Sequence

from kr1.errors import run_cli
from kr1.retrieval.index_build import DEFAULT_MEMORY_BUDGET
from kr1.run.index_build import build_index


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
