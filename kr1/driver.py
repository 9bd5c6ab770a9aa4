"""Train a model to search and answer with GRPO: `python -m kr1.driver`.

    python -m kr1.driver                                         # embedded default, on this machine
    python -m kr1.driver --config 2wiki_qwen2.5_7b_instruct trainer.total_steps=200
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python -m kr1.driver ...

The loop it runs is kr1/run/loop.py (one screen: rollout -> reward and reference log-probs
-> advantages -> update -> weight sync -> evaluate -> log -> checkpoint). TensorBoard scalars
go to <trainer.output_dir>/tensorboard, checkpoints to <trainer.output_dir>/checkpoints;
`trainer.resume=true` continues from the latest complete checkpoint.
"""

from __future__ import annotations

import argparse
from typing import Sequence

from kr1.config import load_config
from kr1.errors import run_cli
from kr1.run.loop import train


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="default", help="bundled config name or YAML path")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_args(argv)
    train(load_config(args.config, args.overrides))


if __name__ == "__main__":
    run_cli(main)
