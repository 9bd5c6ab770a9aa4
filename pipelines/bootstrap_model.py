"""Bootstrap the embedded default's model: a local BPE tokenizer and a tiny Qwen2-style LM.

    python -m pipelines.bootstrap_model --world ~/.cache/kr1/world --out ~/.cache/kr1/model \
        --index ~/.cache/kr1/index --sft-steps 300

A thin main over `kr1.training.bootstrap.bootstrap` (tokenizer, model sizes and the warm start are
described there): Hugging Face format, deterministic for a seed, no downloads.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from kr1.errors import UserError, run_cli
from kr1.training.bootstrap import MODEL_SIZES, bootstrap


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--world", required=True, type=Path, help="directory from pipelines.synthetic_world")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", choices=sorted(MODEL_SIZES), default="small")
    parser.add_argument("--vocab-size", type=int, default=3072)
    parser.add_argument("--index", type=Path, help="index of the warm start's world (needed for the warm start)")
    parser.add_argument("--sft-world", type=Path, help="the warm start's world, e.g. a practice world of other "
                                                        "entities (default: --world)")
    parser.add_argument("--lr", type=float, default=1e-2, help="the warm start's peak learning rate")
    parser.add_argument("--sft-steps", type=int, default=0, help="warm-start steps on single-hop trajectories")
    parser.add_argument("--follow-fraction", type=float, default=0.0,
                        help="share of trajectories that look up the answer's name before answering")
    parser.add_argument("--multihop-fraction", type=float, default=0.0,
                        help="share of warm-start examples that are multi-hop demonstrations on training questions")
    args = parser.parse_args(argv)
    if not 0.0 <= args.multihop_fraction < 1.0:
        raise UserError(f"--multihop-fraction must be in [0, 1), got {args.multihop_fraction}")
    bootstrap(args.world, args.out, args.seed, args.size, args.vocab_size, args.index, args.sft_steps,
              follow_fraction=args.follow_fraction, multihop_fraction=args.multihop_fraction, lr=args.lr,
              sft_world=args.sft_world)
    print(f"wrote tokenizer and {args.size} model to {args.out}")


if __name__ == "__main__":
    run_cli(main)
