"""Prepare 2WikiMultihopQA question files: load, validate every row, write parquet splits.

    python -m pipelines.prepare_data --out data/2wiki                      # from the hub
    python -m pipelines.prepare_data --out data/2wiki --train t.jsonl --test t.parquet

A thin main over `kr1.two_wiki.prepare`: the hub dataset is `hzy/kr1_2wiki` (fields `problem`,
`golden_answers`); local files are JSONL or parquet with the same fields. A missing dev split is
cut from train (`--dev-size` rows, seeded); a bad row stops the job before anything is written.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from kr1.errors import run_cli
from kr1.two_wiki import HUB_ID, prepare


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="directory for {train,dev,test}.parquet")
    parser.add_argument("--hub-id", default=HUB_ID, help="hub dataset used when no local file is given")
    for split in ("train", "dev", "test"):
        parser.add_argument(f"--{split}", type=Path, help=f"local {split} file (JSONL or parquet)")
    parser.add_argument("--dev-size", type=int, default=1000, help="rows cut from train when there is no dev split")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    files = {"train": args.train, "dev": args.dev, "test": args.test}
    counts = prepare(args.out, args.hub_id, files, args.dev_size, args.seed)
    print(f"wrote {args.out}: " + ", ".join(f"{n} {split}" for split, n in counts.items()))


if __name__ == "__main__":
    run_cli(main)
