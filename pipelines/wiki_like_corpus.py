"""Write a wiki-like corpus of any size, to measure retrieval at scale (`kr1.retrieval.wiki_like`).

    python -m pipelines.wiki_like_corpus --out wiki_like.jsonl --passages 4000000 --seed 0
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Sequence

from kr1.errors import run_cli
from kr1.retrieval.wiki_like import generate


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="JSONL file to write")
    parser.add_argument("--passages", required=True, type=int, help="number of passages (wiki-18: 21,015,324)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.passages < 1:
        parser.error("--passages must be at least 1")
    start = time.perf_counter()
    generate(args.out, args.passages, args.seed)
    print(f"wrote {args.passages} passages to {args.out} in {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    run_cli(main)
