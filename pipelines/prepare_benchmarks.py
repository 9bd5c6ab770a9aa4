"""Prepare the seven standard search-QA benchmarks: load, validate every row, write parquet.

    python -m pipelines.prepare_benchmarks --out data/benchmarks                    # all seven, from the hub
    python -m pipelines.prepare_benchmarks --out data/benchmarks --train nq,hotpotqa    # + their train splits
    python -m pipelines.prepare_benchmarks --out data/benchmarks --local flashrag/  # SRC/<name>/<split>.jsonl

A thin main over `kr1.benchmarks.prepare_benchmarks` (sources, splits and the files written are
described there). Writes `OUT/<name>/<split>.parquet` and `OUT/manifest.json`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from kr1.benchmarks import EVAL_SPLITS, HUB_ID, parse_names, prepare_benchmarks
from kr1.data import DataError
from kr1.errors import run_cli


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="directory for <name>/<split>.parquet")
    parser.add_argument("--names", default=",".join(EVAL_SPLITS), help="comma-separated benchmarks (default: all)")
    parser.add_argument("--local", help="a folder in FlashRAG's layout (<name>/<split>.jsonl) instead of the hub")
    parser.add_argument("--hub-id", default=HUB_ID)
    parser.add_argument("--train", default="", help="comma-separated benchmarks whose train split is also written")
    args = parser.parse_args(argv)
    if args.local and not Path(args.local).expanduser().is_dir():
        raise DataError(f"{args.local}: --local folder not found")
    train = parse_names(args.train) if args.train else []
    counts = prepare_benchmarks(args.out, parse_names(args.names), args.local or args.hub_id, train)
    print(f"wrote {args.out}: " + ", ".join(f"{name} {n} {split}" for name, by_split in counts.items()
                                             for split, n in by_split.items()))


if __name__ == "__main__":
    run_cli(main)
