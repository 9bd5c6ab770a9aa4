"""Plot a run's curves from its TensorBoard events, as a PNG: reward, EM and searches by question type,
evidence recall and entropy.

    python -m pipelines.plot_run --run runs/default --out kr1/figures/default_run.png

A thin main over `kr1.run.curves.plot` (the panels are described there). Needs matplotlib
(`pip install -e ".[bench]"`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from kr1.errors import run_cli
from kr1.run.curves import plot


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="trainer.output_dir of the run")
    parser.add_argument("--out", type=Path, required=True, help="PNG file to write")
    args = parser.parse_args(argv)
    print(f"wrote {plot(args.run, args.out)}")


if __name__ == "__main__":
    run_cli(main)
