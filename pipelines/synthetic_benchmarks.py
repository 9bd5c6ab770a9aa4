"""The synthetic world's questions in FlashRAG's layout, under the seven benchmarks' names, so the
benchmark path (prepare, evaluate, train on a mixture) runs offline on the embedded default.

    python -m pipelines.synthetic_benchmarks --world ~/.cache/kr1/world3-seed0-people500 --out flashrag/
    python -m pipelines.prepare_benchmarks --local flashrag/ --out data/benchmarks --train

A thin main over `kr1.world.flashrag_files.synthetic_benchmarks` (which file holds which questions is
described there). These are not the real benchmarks.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from kr1.errors import run_cli
from kr1.world.flashrag_files import synthetic_benchmarks


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--world", required=True, type=Path, help="a directory written by pipelines.synthetic_world")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--per-name", type=int, default=50, help="questions per evaluation file (train: 4x)")
    args = parser.parse_args(argv)
    counts = synthetic_benchmarks(args.world, args.out, args.per_name)
    print(f"wrote {args.out}: " + ", ".join(f"{n} {s} {c}" for n, by in counts.items() for s, c in by.items()))


if __name__ == "__main__":
    run_cli(main)
