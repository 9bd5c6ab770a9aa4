"""Evaluate a model on a question split: EM, F1, turns, searches, response length, invalid actions.

    python -m kr1.eval                                      # embedded default, dev split
    python -m kr1.eval --config default model.path=runs/default/checkpoints/step_30/policy data.split=test
    python -m kr1.eval --config 2wiki_qwen2.5_1.5b_instruct --limit 500 --out eval.jsonl

Episodes are played greedily (one per question) through the rollout engines and the
retriever pool (the loop: kr1/run/evaluation.py). Prints a table and writes every trajectory
as JSONL (default: `<trainer.output_dir>/eval_<split>.jsonl`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from kr1.atomic_write import write_jsonl
from kr1.config import expand_path, load_config
from kr1.errors import run_cli
from kr1.run.evaluation import evaluate_model
from kr1.run.metrics import metrics_table


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="default", help="bundled config name or YAML path")
    parser.add_argument("--limit", type=int, help="evaluate only the first N questions")
    parser.add_argument("--out", type=Path, help="trajectories JSONL (default: <output_dir>/eval_<split>.jsonl)")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    result = evaluate_model(cfg, args.limit)
    out = args.out or expand_path(cfg.trainer.output_dir) / f"eval_{cfg.data.split}.jsonl"
    write_jsonl(out, result.rows)
    print(metrics_table({result.model: result.metrics}))
    print(f"{len(result.rows)} {cfg.data.split} questions in {result.seconds:.1f}s; trajectories in {out}",
          file=sys.stderr)


if __name__ == "__main__":
    run_cli(main)
