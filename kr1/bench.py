"""Speed and memory of kr1 beside simple baselines, in one run, as one markdown table.

    python -m kr1.bench                                  # full size (the goals below), ~2 min on 2 cores
    python -m kr1.bench --size tiny --only retrieval memory --out bench.md

| benchmark | kr1 | baseline | goal |
|---|---|---|---|
| rollout | one batched multi-turn rollout | the same episodes one at a time | >= 10x tokens/s at batch 64 |
| retrieval | Ray retriever pool, 1/2/4 shards | bm25s in-process; rank_bm25 | >= 0.8x bm25s; > 100x rank_bm25 |
| memory | token-budget micro-batches | fixed rows per micro-batch | peak within 1.25x from 1x to 8x length |
| step | share of a driver step per phase | - | weight sync < 5% of the step |
| overlap | reward beside the reference | reward, then reference | - |

It starts a local Ray (or joins RAY_ADDRESS) and uses the embedded default's world,
index and tiny model (`~/.cache/kr1`, built on first use) unless --world/--index/--model
name others. Full-size retrieval runs on a ~115k-passage synthetic corpus built once
under --cache-dir. `step` and `overlap` come from one measurement. Progress goes to
stderr; the table to stdout (and --out).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from kr1.bench_table import Row, markdown_table

BENCHMARKS = ("rollout", "retrieval", "memory", "step", "overlap")


@dataclass(frozen=True)
class BenchSize:
    rollout_batch: int  # episodes per batched rollout (one question each, greedy)
    queries: int  # retrieval queries (train-split questions)
    rank_bm25_queries: int  # the subset rank_bm25 is timed on
    repeats: int  # timed repeats (best for retrieval, median for overlap)
    memory_rows: int
    memory_prompt: int
    memory_response: int  # 1x response length; also run at 4x and 8x
    memory_budget: int | None  # token budget; None: the config's learner.token_budget
    steps: int  # driver steps of the step breakdown
    config_overrides: tuple[str, ...]  # dotted overrides of the default config, for every benchmark
    large_corpus: bool  # retrieval on the ~115k-passage corpus (else the world's own corpus)


SIZES = {
    "full": BenchSize(64, 2000, 20, 3, 64, 64, 96, None, 3, (), True),
    "tiny": BenchSize(8, 200, 5, 1, 32, 16, 16, 1024, 2,
                      ("trainer.prompts_per_step=2", "rollout.n_samples=2", "rollout.max_turns=2"), False),
}


def _path_overrides(world: Path | None, index: Path | None, model: Path | None) -> list[str]:
    items = {f"data.{s}_path": world / f"{s}.jsonl" for s in ("train", "dev", "test")} if world else {}
    if index:
        items["retriever.index_dir"] = index
    if model:
        items["model.path"] = model
    return [f"{k}={v}" for k, v in items.items()]


def run_benchmarks(size: str, only: Sequence[str], world: Path | None = None, index: Path | None = None,
                   model: Path | None = None, corpus: Path | None = None,
                   cache_dir: Path = Path("~/.cache/kr1/bench")) -> list[Row]:
    """Every selected benchmark's rows, in BENCHMARKS order."""
    from tqdm.auto import tqdm

    from kr1.assets import resolve_assets
    from kr1.config import load_config
    from kr1.data import load_questions
    from kr1.ray_runtime import ensure_ray

    s, cache_dir = SIZES[size], cache_dir.expanduser()
    overrides = _path_overrides(world, index, model) + list(s.config_overrides)
    cfg = load_config("default", overrides)
    ensure_ray(cfg.cluster.address, cfg.cluster.num_cpus)
    assets = resolve_assets(cfg, progress=False)
    rows: list[Row] = []
    with tqdm(total=len(only), desc="kr1.bench", unit="bench", file=sys.stderr) as bar:
        def progress(text: str) -> None:
            bar.set_description(text)

        if "rollout" in only:
            from kr1.bench_training import rollout_rows

            questions = load_questions(assets.split_path("train"))[:s.rollout_batch]
            rows += rollout_rows(cfg, assets.model_path, assets.index_dir, questions, progress)
            bar.update()
        if "retrieval" in only:
            from kr1.bench_retrieval import large_corpus, retrieval_rows

            if corpus is None:
                world_dir = large_corpus(cache_dir) if s.large_corpus else assets.split_path("train").parent
                corpus = world_dir / "corpus.jsonl"
            split = corpus.parent / "train.jsonl"
            queries = [q.problem for q in load_questions(split if split.is_file() else assets.split_path("train"))]
            rows += retrieval_rows(corpus, queries[:s.queries], cache_dir, s.rank_bm25_queries, s.repeats, progress)
            bar.update()
        if "memory" in only:
            from kr1.bench_memory import memory_rows

            budget = s.memory_budget or cfg.learner.token_budget
            rows += memory_rows(assets.model_path, s.memory_rows, s.memory_prompt, s.memory_response, budget,
                                progress)
            bar.update()
        if "step" in only or "overlap" in only:
            from kr1.bench_training import overlap_rows, phase_times, step_rows

            times = phase_times(overrides, s.steps, s.repeats + 2, progress)
            rows += (step_rows(times) if "step" in only else []) + (overlap_rows(times) if "overlap" in only else [])
            bar.update(("step" in only) + ("overlap" in only))
    return rows


def main(argv: Sequence[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="full", help="tiny: a quick smoke run")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS), metavar="NAME",
                        help=f"run only these ({', '.join(BENCHMARKS)})")
    parser.add_argument("--out", type=Path, help="also write the table to this markdown file")
    parser.add_argument("--world", type=Path, help="question files (train/dev/test.jsonl) instead of the default's")
    parser.add_argument("--index", type=Path, help="index of the world (retriever.num_shards shards)")
    parser.add_argument("--model", type=Path, help="model directory instead of the default tiny model")
    parser.add_argument("--corpus", type=Path, help="retrieval benchmark corpus (default: see --size)")
    parser.add_argument("--cache-dir", type=Path, default=Path("~/.cache/kr1/bench"),
                        help="where the large corpus and the retrieval indexes are built once")
    args = parser.parse_args(argv)
    only = [b for b in BENCHMARKS if b in args.only]
    start = time.perf_counter()
    rows = run_benchmarks(args.size, only, args.world, args.index, args.model, args.corpus, args.cache_dir)
    table = markdown_table(rows)
    footer = (f"\n\n`python -m kr1.bench --size {args.size}`, {time.strftime('%Y-%m-%d')}, "
              f"{os.cpu_count()} CPU cores, {time.perf_counter() - start:.0f} s wall")
    print(table + footer)
    if args.out:
        args.out.write_text(table + footer + "\n")
    return rows


if __name__ == "__main__":
    from kr1.cli_errors import run_cli

    run_cli(main)
