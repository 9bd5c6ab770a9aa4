"""Generate a fictional knowledge world: a Wikipedia-like corpus and multi-hop questions.

    python -m pipelines.synthetic_world --out ~/.cache/kr1/world --seed 0 [--people 500]

A thin main over `kr1.world.synthetic.generate` (the files it writes and how the world is split are
described there).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kr1.errors import run_cli
from kr1.world.names import MAX_PEOPLE, MIN_PEOPLE
from kr1.world.synthetic import generate


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory to write (replaced atomically)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--people", type=int, default=500,
                        help=f"world size, {MIN_PEOPLE} to {MAX_PEOPLE:,}; other entities scale with it")
    parser.add_argument("--avoid", type=Path, help="another world whose people, films and organisations this one "
                                                    "may not name (a decoy or practice world beside it)")
    args = parser.parse_args(argv)
    manifest = generate(args.out, args.seed, args.people, avoid=args.avoid)
    print(f"wrote {args.out}: {manifest['passages']} passages, {manifest['train_questions']} train / "
          f"{manifest['dev_questions']} dev / {manifest['test_questions']} test questions")


if __name__ == "__main__":
    run_cli(main)
