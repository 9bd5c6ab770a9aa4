"""Build the embedded default's warm start for a config: the tiny model a synthetic run starts from.

    python -m kr1.warm_start --ship                  # rebuild the one kr1 ships (kr1/models/default_warm_start)
    python -m kr1.warm_start model.bootstrap_sft_steps=300 --out /tmp/warm   # any other, anywhere

The worlds, index and settings come from the config exactly as `python -m kr1.driver` resolves
them, so a run of that config loads what this builds. `--ship` writes `provenance.json` beside the
weights: the command, seed, settings and every file's sha256, checked each time a run loads it.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Sequence

from kr1.config import load_config
from kr1.errors import UserError, run_cli
from kr1.run.assets import build_warm_start
from kr1.training.shipped import SHIPPED_DIR, file_digests


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="default", help="bundled config name or YAML path")
    parser.add_argument("--ship", action="store_true", help=f"write it into {SHIPPED_DIR} with its provenance")
    parser.add_argument("--out", type=Path, help="where to write it (default: where a run of the config looks)")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_args(argv)
    if args.ship and args.out:
        raise UserError("--ship writes into the package (kr1/models/default_warm_start): give --ship or --out")
    cfg = load_config(args.config, args.overrides)
    if cfg.data.name != "synthetic" or cfg.model.path:
        raise UserError("the warm start is the synthetic world's bootstrapped model: data.name=synthetic and no "
                        "model.path")
    argv = list(sys.argv[1:] if argv is None else argv)
    command = " ".join(["python -m kr1.warm_start", *map(shlex.quote, argv)])
    out = build_warm_start(cfg, SHIPPED_DIR if args.ship else args.out, command=command if args.ship else None)
    print(f"wrote the warm start to {out}")
    for name, digest in file_digests(out).items():
        print(f"  {digest}  {name}")


if __name__ == "__main__":
    run_cli(main)
