"""Evaluate a model on a question split, or models on the standard QA benchmarks: EM, F1, turns,
searches, response length, invalid actions.

    python -m kr1.eval                                      # embedded default, dev split
    python -m kr1.eval --index-decoy                        # and closed-book: retrieval from another world
    python -m kr1.eval --config default model.path=runs/default/checkpoints/step_30/policy data.split=test
    python -m kr1.eval --config 2wiki_qwen2.5_1.5b_instruct --limit 500 --out eval.jsonl
    python -m kr1.eval --benchmarks all --benchmark-dir data/benchmarks --limit 500 --models WARM CKPT

Episodes are played greedily (one per question) through the rollout engines and the retriever
pool (the loop: kr1/run/evaluation.py). A split prints a table and writes every trajectory as
JSONL (default: `<trainer.output_dir>/eval_<split>.jsonl`). `--benchmarks` (prepared by
`python -m pipelines.prepare_benchmarks`) prints a row per benchmark and model and each model's
average, writes it to `benchmarks.md` and the trajectories to `eval_<name>.jsonl` (with several
models `eval_<model>_<name>.jsonl`), all in `--out` (default: trainer.output_dir). Config
overrides may follow `--models`: they are told apart by their `section.key=value` form.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Sequence

from kr1.atomic_write import atomic_file, write_jsonl
from kr1.config import ConfigError, expand_path, load_config
from kr1.errors import run_cli
from kr1.run.evaluation import evaluate_benchmarks, evaluate_model
from kr1.run.metrics import benchmark_table, metrics_table, type_table

OVERRIDE = re.compile(r"[a-z_]+\.[a-z_.]+=.*")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="default", help="bundled config name or YAML path")
    parser.add_argument("--limit", type=int, help="evaluate only the first N questions (of each benchmark)")
    parser.add_argument("--out", type=Path, help="trajectories JSONL (default: <output_dir>/eval_<split>.jsonl); "
                                                 "with --benchmarks a directory (default: <output_dir>)")
    parser.add_argument("--benchmarks", help="comma-separated (nq,triviaqa,popqa,hotpotqa,2wikimultihopqa,musique,"
                                                   "bamboogle), or all")
    parser.add_argument("--benchmark-dir", type=Path,
                        help="written by pipelines.prepare_benchmarks (default: <data.cache_dir>/benchmarks)")
    parser.add_argument("--models", nargs="+", default=[], help="model directories or hub ids, side by side "
                                                                "(default: model.path)")
    parser.add_argument("--index-decoy", nargs="?", const="auto", metavar="DIR",
                        help="also evaluate with retrieval from an index that cannot answer the questions (the "
                             "closed-book row): DIR, or retriever.decoy_index_dir, or for the synthetic world the "
                             "world of another seed")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_args(argv)
    models = [m for m in args.models if not OVERRIDE.fullmatch(m)]
    overrides = [m for m in args.models if OVERRIDE.fullmatch(m)] + args.overrides
    if args.index_decoy and OVERRIDE.fullmatch(args.index_decoy):  # `--index-decoy key=value`: no DIR given
        overrides, args.index_decoy = [args.index_decoy, *overrides], "auto"
    cfg = load_config(args.config, overrides)
    if args.benchmarks is None:
        if models:
            raise ConfigError("--models needs --benchmarks (for one model on a split, set model.path=)")
        result, *decoy = evaluate_model(cfg, args.limit, args.index_decoy)
        out = args.out or expand_path(cfg.trainer.output_dir) / f"eval_{cfg.data.split}.jsonl"
        write_jsonl(out, result.rows)
        rows = {result.model: result.metrics, **{f"{r.model} (decoy index)": r.metrics for r in decoy}}
        print(metrics_table(rows))
        if decoy:
            decoy_out = out.with_name(f"{out.stem}_decoy{out.suffix}")
            write_jsonl(decoy_out, decoy[0].rows)
            print(type_table({"": result.metrics}, {"": decoy[0].metrics}))
        print(f"{len(result.rows)} {cfg.data.split} questions in {sum(r.seconds for r in (result, *decoy)):.1f}s; "
              f"trajectories in {out}" + (f" and {decoy_out}" if decoy else ""), file=sys.stderr)
        return
    names = [n.strip() for n in args.benchmarks.split(",") if n.strip()]
    root = args.benchmark_dir or expand_path(cfg.data.cache_dir) / "benchmarks"
    results = evaluate_benchmarks(cfg, root, names, models, args.limit)
    out = args.out or expand_path(cfg.trainer.output_dir)
    several = len({r.model for r in results}) > 1
    for r in results:
        write_jsonl(out / (f"eval_{r.model.replace('/', '_')}_{r.split}.jsonl" if several else f"eval_{r.split}.jsonl"),
                    r.rows)
    table = benchmark_table([(r.split, r.model, r.metrics) for r in results])
    with atomic_file(out / "benchmarks.md") as handle:
        handle.write(table + "\n")
    print(table)
    questions = sum(len(r.rows) for r in results)
    print(f"{questions} questions in {sum({r.model: r.seconds for r in results}.values()):.1f}s; table in "
          f"{out / 'benchmarks.md'}, trajectories in {out}", file=sys.stderr)


if __name__ == "__main__":
    run_cli(main)
