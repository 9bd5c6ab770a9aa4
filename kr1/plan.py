"""Estimate the peak GPU memory of every role for a config, and refuse one that cannot fit.

    python -m kr1.plan --config 2wiki_qwen2.5_7b_instruct                         # table, exit 0
    python -m kr1.plan --config 2wiki_qwen2.5_7b_instruct learner.num_workers=1   # + one line on stderr, exit 1

The arithmetic, and what each term counts, is in kr1/training/memory_plan.py; the driver
runs the same check before it starts any actor (`cluster.memory_plan=false` skips it).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from kr1.config import load_config
from kr1.errors import run_cli
from kr1.training.memory_plan import PlanError, check_plan


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="default", help="bundled config name or YAML path")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_args(argv)
    try:
        plan = check_plan(load_config(args.config, args.overrides))
    except PlanError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print(plan.table())
    message = plan.refusal()
    if message:
        print(f"error: {message}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    run_cli(main)
