"""The driver's own work per training step at the NQ + HotpotQA recipe's size, against a step's rollout budget.

    rows = driver_rows(load_config(RECIPE_CONFIG), questions=RECIPE_QUESTIONS)   # part of `python -m kr1.bench`
    python -m kr1.bench --only driver

Everything the driver does between the engines' episodes and the learner's update, and after it, runs here on
synthetic episodes built in memory (no Ray, no model), through the loop's own calls: prompt selection
(`PromptLoader.batch`), the learner's batch (`TrainingRun.train_batch`), advantages (`TrainingRun.advantages`),
the learner group's slices of the batch (`rank_parts`, what it puts in the object store per rank, and `rows_back`,
each pass's log-probs put together: the colocated reference's pass, the rollout policy's when there are
mini-batches, then each mini-batch), and the step's metrics with their log (`TrainingRun.log`, into a real
`RunLogger`). What crosses the object store and what the actors do is not the driver's and is not timed.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np

from kr1.bench.table import Row, met
from kr1.config import Config
from kr1.data import QARecord
from kr1.rollout.episodes import Episode
from kr1.rollout.rewards import EpisodeScores
from kr1.run.run_logger import RunLogger
from kr1.run.step_rollout import StepRollout
from kr1.run.training_run import TrainingRun
from kr1.training.batch import TrainBatch
from kr1.training.prompt_loader import PromptLoader
from kr1.training.token_budget import TokenBudgetBatcher, rank_parts, rows_back

# the 3B recipe's step on 8 H100s: Search-R1's author ran its 200 steps in "about 2 or 3 hours"
# (PeterGriffinJin/Search-R1 issue #1), 36 s a step at the short end; the whole step stands in for its rollout
ROLLOUT_BUDGET_S = 36.0
RECIPE_CONFIG = "nq_hotpotqa_qwen2.5_3b_instruct"  # its prompts, samples, lengths, token budget and learner ranks
# NQ's 79,168 and HotpotQA's 90,447 training questions (the recipe's mixture)
RECIPE_QUESTIONS = 170_000
VOCAB = 151_643  # Qwen2.5's tokens: the ids the episodes hold
HOTPOTQA_TYPES = ("bridge", "comparison")


def synthetic_questions(count: int) -> list[QARecord]:
    """`count` questions, half NQ-like (no type), half HotpotQA-like (bridge or comparison)."""
    return [QARecord(f"q{i}", f"question {i}?", [f"answer {i}"],
                     type="" if i % 2 else HOTPOTQA_TYPES[i // 2 % 2], dataset="nq" if i % 2 else "hotpotqa")
            for i in range(count)]


def synthetic_episodes(questions: list[QARecord], cfg: Config, seed: int = 0) -> list[Episode]:
    """`rollout.n_samples` finished episodes per question, as an engine returns them: a search_r1 prompt of 150 to
    260 tokens, 1 to `rollout.max_turns` turns of up to `max_new_tokens_per_turn` generated tokens, each search
    answered by a 300 to 500 token <information> block, cut at `max_total_tokens`."""
    r, rng = cfg.rollout, np.random.default_rng(seed)
    episodes = []
    for q in questions:
        for sample in range(r.n_samples):
            episode = Episode(q.id, sample, rng.integers(0, VOCAB, int(rng.integers(150, 261))).tolist())
            turns = int(rng.integers(1, r.max_turns + 1))
            for turn in range(turns):
                room = r.max_total_tokens - episode.length
                generated = min(room, int(rng.integers(20, r.max_new_tokens_per_turn + 1)))
                if generated <= 0:
                    break
                episode.append(rng.integers(0, VOCAB, generated).tolist(), generated=True)
                if turn == turns - 1:
                    episode.actions.append("answer")
                    episode.answer, episode.finish = f"answer {sample}", "answer"
                    break
                episode.actions.append("search")
                episode.queries.append(f"query {turn}")
                episode.retrieved_ids.append([f"d{turn}{k}" for k in range(3)])
                episode.retrieved_titles.append([f"title {turn}{k}" for k in range(3)])
                episode.search_latencies.append(0.05)
                episode.search_batch_sizes.append(32)
                episode.search_batch_unique.append(30)
                info = min(r.max_total_tokens - episode.length, int(rng.integers(300, 501)))
                episode.append(rng.integers(0, VOCAB, info).tolist(), generated=False)
            episode.finish = episode.finish or "max_turns"
            episodes.append(episode)
    return episodes


def synthetic_scores(episodes: list[Episode], seed: int = 0) -> EpisodeScores:
    """Exact-match rewards of a policy that answers a third of the time (most groups informative)."""
    em = (np.random.default_rng(seed).random(len(episodes)) < 1 / 3).astype(np.float32)
    return EpisodeScores(rewards=em, em=em, f1=em, format=np.ones_like(em), cover_em=em, sub_em=em,
                         evidence=np.full_like(em, np.nan))


def learner_slices(batch: TrainBatch, cfg: Config) -> list[list[tuple[np.ndarray, TrainBatch, list[np.ndarray]]]]:
    """What `LearnerGroup` slices in the driver in one step, `ray.put` and the ranks' work left out: the colocated
    reference's pass and, with mini-batches, the rollout policy's (parts out, (B, T) log-probs back), then each
    mini-batch's parts."""
    batcher, ranks = TokenBudgetBatcher(cfg.learner.token_budget), cfg.learner.num_workers

    def logprobs_pass(whole: TrainBatch) -> np.ndarray:
        parts = rank_parts(whole.tokens_only(), batcher, ranks)
        return rows_back(whole.input_ids.shape, [rows for rows, _, _ in parts],
                         [np.zeros(part.input_ids.shape, np.float32) for _, part, _ in parts])  # the ranks' values
    batch = batch.with_fields(ref_logprobs=logprobs_pass(batch))
    if cfg.learner.mini_batches > 1:
        batch = batch.with_fields(old_logprobs=logprobs_pass(batch))
    return [rank_parts(mini, batcher, ranks) for mini in batch.chunk(cfg.learner.mini_batches)]


class _NoGauges:
    def record(self, step: int, metrics: dict[str, float]) -> None:
        pass  # Ray's metrics gauges need a Ray worker: not the driver's computation


def driver_times(cfg: Config, questions: int, steps: int = 5, seed: int = 0) -> dict[str, float]:
    """Median seconds per step of each part of the driver's work (prompt selection: the mean over `steps` steps
    from the middle of an epoch into the next), with the step's episode and token counts."""
    train = synthetic_questions(questions)
    loader = PromptLoader(train, cfg.trainer.prompts_per_step, cfg.trainer.seed)
    episodes = synthetic_episodes(loader.batch(0), cfg, seed)
    scores = synthetic_scores(episodes, seed)
    boundary = len(train) // cfg.trainer.prompts_per_step  # the step that crosses into the second epoch
    select = [boundary - steps // 2 + i for i in range(steps)]
    start = time.perf_counter()
    for step in select:
        loader.batch(step)
    times = {"prompt selection": (time.perf_counter() - start) / steps}
    start = time.perf_counter()
    np.random.default_rng([cfg.trainer.seed, 0]).permutation(len(train))
    times["one permutation"] = time.perf_counter() - start
    with tempfile.TemporaryDirectory(prefix="kr1-bench-driver-") as tmp:
        run = SimpleNamespace(cfg=cfg, pad_id=0, types={q.id: q.type for q in train}, gauges=_NoGauges(),
                              logger=RunLogger(Path(tmp), cfg.trainer.total_steps, quiet=True))
        rollout = StepRollout(episodes)
        parts: dict[str, list[float]] = {"batch assembly": [], "advantages": [], "learner slices": [],
                                         "metrics and log": []}

        def timed(name: str, fn: Callable[[], Any]) -> Any:
            began = time.perf_counter()
            out = fn()
            parts[name].append(time.perf_counter() - began)
            return out

        try:
            for step in range(steps):
                batch = timed("batch assembly", lambda: TrainingRun.train_batch(run, rollout))
                batch = timed("advantages", lambda: TrainingRun.advantages(run, batch, scores, episodes))
                timed("learner slices", lambda: learner_slices(batch, cfg))
                train_metrics = {"loss": 0.1, "pg_loss": 0.1, "kl": 0.001, "entropy": 1.0, "grad_norm": 1.0,
                                 "lr": cfg.learner.lr}
                phases = {"rollout": ROLLOUT_BUDGET_S, "score_and_ref": 5.0, "update": 10.0, "sync_weights": 1.0}
                timed("metrics and log", lambda: TrainingRun.log(run, step, rollout, batch, scores, train_metrics,
                                                                 {}, phases))
        finally:
            run.logger.close()
    times.update({name: statistics.median(values) for name, values in parts.items()})
    times["total"] = sum(v for k, v in times.items() if k != "one permutation")
    times["episodes"] = float(len(episodes))
    times["tokens"] = float(sum(e.length for e in episodes))
    return times


def driver_rows(cfg: Config, questions: int = RECIPE_QUESTIONS, steps: int = 5,
                progress: Callable[[str], None] = lambda s: None) -> list[Row]:
    """One row: the driver's seconds per step against ROLLOUT_BUDGET_S (goal: under 1 %)."""
    progress(f"driver: {questions:,} questions, {cfg.trainer.prompts_per_step} prompts x {cfg.rollout.n_samples}")
    t = driver_times(cfg, questions, steps)
    share = t["total"] / ROLLOUT_BUDGET_S
    ms = {k: f"{1000 * v:.1f} ms" for k, v in t.items() if k not in ("episodes", "tokens")}
    before = t["one permutation"] * cfg.trainer.prompts_per_step  # a permutation drawn for every prompt
    parts = ", ".join(f"{k} {ms[k]}" for k in ("prompt selection", "batch assembly", "advantages",
                                              "learner slices", "metrics and log"))
    return [Row("driver", f"driver work per step: {questions:,} questions, {cfg.trainer.prompts_per_step} prompts x "
                f"{cfg.rollout.n_samples} samples ({t['tokens'] / t['episodes']:,.0f} tokens an episode, up to "
                f"{cfg.rollout.max_total_tokens:,})", ms["total"], f"{ROLLOUT_BUDGET_S:.0f} s rollout", share,
                "< 1% of the rollout budget", met(share < 0.01),
                f"{parts}; medians of {steps} steps on synthetic episodes (no Ray, no model); prompt selection "
                f"drawing the epoch's permutation for every prompt, as before: ~{1000 * before:,.0f} ms; budget: "
                f"the 3B recipe's step on 8 H100s, 36 s at the short end of Search-R1's 2-3 h for 200 steps")]
