"""The pieces of a training run, each step of the loop as one method (the loop is in kr1/run/loop.py).

Start-up finds or builds the inputs, starts or joins Ray, claims the output directory (one
run per directory), reserves placement groups and starts every pool: retriever shards,
rollout engines, learner group, reference, reward scorer. With `trainer.resume=true` it
reloads the latest complete checkpoint, pushes those weights to the engines, and drops what a
killed run logged after that step, so every step is logged once. Checkpoints, resume and
recovery are kr1/run/run_state.py's; the step's rollout as a value is kr1/run/step_rollout.py's.
"""

from __future__ import annotations

import concurrent.futures
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch

from actors.learner import LearnerGroup
from actors.reference import ReferencePool
from actors.reward import start_scorer
from kr1.cluster import ensure_ray, stop_actors
from kr1.config import Config, expand_path
from kr1.data import QARecord
from kr1.errors import UserError
from kr1.rollout.episodes import within_prompt_limit
from kr1.rollout.rewards import EpisodeScores, informative_groups
from kr1.run.assets import resolve_assets
from kr1.run.evaluation import evaluate_closed_book, evaluate_groups
from kr1.run.metrics import (episode_metrics, metrics_table, search_metrics, shared_state_rate, type_metrics,
                             type_table)
from kr1.run.placement import Placement, check_cluster_fits
from kr1.run.pools import check_retriever, start_engines, start_retriever
from kr1.run.ray_metrics import RunGauges
from kr1.run.resume_check import input_fingerprints
from kr1.run.rollout_queue import RolloutQueue
from kr1.run.run_lock import RunLock
from kr1.run.run_logger import RunLogger
from kr1.run.run_state import RunState, claim_output_dir
from kr1.run.step_rollout import AsyncRollouts, StepRollout, SyncRollouts, sample_informative
from kr1.run.weight_sync import make_weight_sync
from kr1.training.algorithms import ADVANTAGE_ESTIMATORS, anchor_state_advantages, turn_token_advantages
from kr1.training.batch import TrainBatch
from kr1.training.memory_plan import check_memory_plan
from kr1.training.prompt_loader import PromptLoader
from kr1.training.stability_monitors import StabilityMonitors


class TrainingRun:
    """The pools of a run and one method per step of the loop; a step's data passes through the loop as values
    (kr1/run/step_rollout.py's StepRollout, the TrainBatch, the scores), never through attributes."""

    def __init__(self, cfg: Config, quiet: bool = False) -> None:
        self.cfg, self.quiet = cfg, quiet
        if cfg.cluster.memory_plan:
            check_memory_plan(cfg)
        # join or start Ray first: a cluster we cannot reach, or that can never hold the run, fails before
        # any building starts
        ensure_ray(cfg.cluster.address, cfg.cluster.num_cpus, cfg.cluster.dashboard_host, include_dashboard=True)
        check_cluster_fits(cfg)
        self.assets = resolve_assets(cfg, progress=not quiet, decoy=cfg.trainer.eval_closed_book)
        from transformers import AutoTokenizer  # 3 s of imports: not for a command that only fails on its input

        self.tokenizer = AutoTokenizer.from_pretrained(self.assets.model_path, **(
            {"gguf_file": cfg.model.gguf_file} if cfg.model.gguf_file else {}))
        train = training_questions(cfg, self.assets.questions("train"), self.tokenizer)
        self.loader = PromptLoader(train, cfg.trainer.prompts_per_step, cfg.trainer.seed)
        self.golds = {q.id: q.golden_answers for q in self.loader.questions}
        self.supporting = {q.id: q.supporting_titles for q in self.loader.questions}
        self.datasets = {q.id: q.dataset for q in self.loader.questions}
        self.types = {q.id: q.type for q in self.loader.questions}
        # dev questions are all kept (a published benchmark counts every question; one too long ends unanswered)
        self.dev = self.assets.questions("dev")[:cfg.trainer.eval_prompts]
        # the probe: the same training questions at every probe, drawn once from the seed
        self.probe = random.Random(cfg.trainer.seed).sample(
            self.loader.questions, min(cfg.trainer.probe_prompts, len(self.loader.questions)))
        inputs = input_fingerprints(self.assets.model_path, self.assets.index_dir, self.assets.split_paths("train"))
        check_retriever(cfg.retriever)  # a retrieval server that does not answer stops the run here
        # the run directory appears only once every input has been found and validated, and holds one run
        self.output_dir = expand_path(cfg.trainer.output_dir)
        self.lock = RunLock.acquire(self.output_dir)
        try:
            claim_output_dir(self.output_dir, cfg.trainer)
            self.state = RunState(cfg, self.output_dir, inputs)
            self._start()
        except BaseException:  # what started is stopped, and the directory is free for the next try
            self.close()
            raise

    def _start(self) -> None:
        cfg, model = self.cfg, self.assets.model_path
        resume_from = self.state.resume_point() if cfg.trainer.resume else None  # before any actor starts
        self.state.begin(resume_from)
        self.pad_id = self.tokenizer.pad_token_id or 0
        self.placement = Placement(cfg)
        self.retriever = start_retriever(cfg.retriever, self.assets.index_dir)
        self.learners = LearnerGroup(cfg, model, self.placement)
        self.reference = ReferencePool(cfg, model, self.placement, self.learners)
        self.engines = start_engines(cfg, model, self.retriever, self.placement)
        self.scorer = start_scorer(cfg.reward)
        self.weight_sync = make_weight_sync(cfg.learner.weight_sync)
        self.recoveries = 0
        self.monitors = StabilityMonitors(cfg.monitor)
        # trainer.mode=async: later steps' rollouts run while the learner trains (policy version = steps done)
        self.rollouts = AsyncRollouts(RolloutQueue(self.start_rollout, cfg.algorithm.max_staleness,
                                                   cfg.trainer.prompts_per_step), cfg.trainer.total_steps) \
            if cfg.trainer.mode == "async" else SyncRollouts(self.engines, self.loader, cfg)
        # the reference pass of groups dynamic sampling keeps runs while later rounds roll out, unless the engines
        # share the GPUs with it (or there is no reference)
        self.reference_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="reference") \
            if cfg.algorithm.dynamic_sampling and not cfg.cluster.colocate and cfg.reference.placement != "none" \
            else None
        self.start_step = 0
        if resume_from:
            self.start_step = self.state.restore(*resume_from, self.learners, self.rollouts)
            self.sync_weights()
        # rows a killed run logged past the checkpoint are dropped: each step is logged once
        self.logger = RunLogger(self.output_dir, cfg.trainer.total_steps, quiet=self.quiet, start_step=self.start_step)
        self.gauges = RunGauges(self.output_dir.name)  # the headline figures in Ray's metrics (Prometheus, Grafana)

    # --- one method per step of the loop -------------------------------------------------
    def rollout(self, step: int) -> StepRollout:
        """Sampled episodes for this step's prompts, `rollout.n_samples` per prompt (from the async queue in
        trainer.mode=async). With dynamic sampling, more prompts are rolled out until `trainer.prompts_per_step`
        groups have rewards that differ, and those groups, already scored, are the step's episodes."""
        rollout = self.rollouts.take(step)
        if not self.cfg.algorithm.dynamic_sampling:
            return rollout
        reference = None if self.reference_thread is None else \
            (lambda episodes: self.reference_thread.submit(self.reference.logprobs, self.train_batch(
                StepRollout(episodes, rollout.lag))))
        return sample_informative(rollout, step, self.cfg, self.loader, self.engines,
                                  lambda episodes: ray.get(self._score(episodes)), reference)

    def start_rollout(self, step: int) -> list[ray.ObjectRef]:
        """The engines start on `step`'s prompts; one ref per engine slice (the async queue's source)."""
        return self.engines.rollout_refs(self.loader.batch(step), self.cfg.rollout.n_samples,
                                         seed=self.cfg.trainer.seed + step)

    def train_batch(self, rollout: StepRollout) -> TrainBatch:
        """The learner's batch; episodes sampled by an older policy bring their behaviour log-probs (the decoupled
        objective), on-policy ones do not (the loss is then sync mode's exactly)."""
        return TrainBatch.from_episodes(rollout.episodes, self.pad_id, behaviour=rollout.lag > 0)

    def score(self, rollout: StepRollout) -> ray.ObjectRef:
        """Start the reward scorer; returns at once so the reference pass runs meanwhile (scores dynamic sampling
        already made are handed back as they are)."""
        return ray.put(rollout.scores) if rollout.scores is not None else self._score(rollout.episodes)

    def _score(self, episodes: list[Any]) -> ray.ObjectRef:
        golds = {e.question_id: self.golds[e.question_id] for e in episodes}
        return self.scorer.score.remote(episodes, golds, {q: self.supporting[q] for q in golds},
                                        {q: self.datasets[q] for q in golds})

    def ref_logprobs(self, batch: TrainBatch, rollout: StepRollout | None = None) -> TrainBatch:
        """The batch with its reference log-probs: those dynamic sampling started while it sampled, or a pass
        now (colocated vLLM frees its GPU memory first)."""
        if rollout is not None and rollout.reference:
            out, row = np.zeros(batch.input_ids.shape, dtype=np.float32), 0
            for rows, pending in rollout.reference:
                values = pending.result()
                out[row:row + rows, :values.shape[1]] = values
                row += rows
            return batch.with_fields(ref_logprobs=out)
        self.engines.sleep()  # a no-op unless colocated
        return batch.with_fields(ref_logprobs=self.reference.logprobs(batch))

    def advantages(self, batch: TrainBatch, scores: EpisodeScores, episodes: list[Any]) -> TrainBatch:
        """Each episode's advantage (B,); with algorithm.step_advantage_weight, per token (B, T): its turn's
        step-level advantage among the group's episodes in the same state added (GiGPO)."""
        a = self.cfg.algorithm
        rewards, groups = torch.tensor(np.array(scores.rewards)), torch.tensor(np.array(batch.group_ids))
        adv = ADVANTAGE_ESTIMATORS[a.advantage](rewards, groups, norm_by_std=a.norm_by_std).numpy().astype(np.float32)
        if a.step_advantage_weight:
            steps = anchor_state_advantages(rewards, groups, [e.turn_states() for e in episodes], a.norm_by_std)
            adv = turn_token_advantages(adv, steps, [e.turn_starts for e in episodes], batch.prompt_lengths,
                                        batch.input_ids.shape[1], a.step_advantage_weight)
        return batch.with_fields(rewards=scores.rewards, advantages=adv)

    def update(self, batch: TrainBatch, step: int) -> dict[str, float]:
        return self.learners.update(batch, step)  # colocated engines sleep from ref_logprobs until sync_weights

    def sync_weights(self) -> None:
        """New weights to the engines; in async mode without waiting: each engine loads them after the rollouts
        it already has, and plays later calls (rollouts, evaluation) on them."""
        self.weight_sync.sync(self.learners, self.engines, wait=self.rollouts.waits_for_weights)

    def evaluate(self, step: int) -> dict[str, float]:
        """Greedy dev-split metrics every `trainer.eval_every` steps, and after the last (with the closed-book
        metrics there); the probe's every `trainer.probe_every` steps and after the last."""
        t, last = self.cfg.trainer, step + 1 == self.cfg.trainer.total_steps
        dev = bool(self.dev) and t.eval_every > 0 and (last or (step + 1) % t.eval_every == 0)
        probe = bool(self.probe) and (last or (step + 1) % t.probe_every == 0)
        return {**self._greedy_metrics(dev, probe), **(self._closed_book_metrics() if dev and last else {})}

    def _greedy_metrics(self, dev: bool, probe: bool) -> dict[str, float]:
        """The dev split's (eval/*) and the probe's (probe/*) metrics, both played in one batch."""
        groups = {name: questions for name, questions, wanted in (("eval", self.dev, dev), ("probe", self.probe, probe))
                  if wanted}
        played = evaluate_groups(self.cfg, groups, self.engines) if groups else {}
        return {f"{name}/{k}": v for name, (metrics, _) in played.items() for k, v in metrics.items()}

    def _closed_book_metrics(self) -> dict[str, float]:
        """The dev metrics again with every search answered from the decoy index (EM when retrieval cannot help);
        none without a decoy index or with trainer.eval_closed_book off."""
        if self.assets.decoy_index_dir is None or not self.cfg.trainer.eval_closed_book:
            return {}
        metrics, _ = evaluate_closed_book(self.cfg, self.dev, self.engines, self.assets.decoy_index_dir)
        return {f"closed_book/{k}": v for k, v in metrics.items()}

    def evaluate_start(self) -> dict[str, float]:
        """The starting policy's dev and closed-book metrics, logged at step 0 (skipped when resuming or eval is
        off)."""
        dev = self.cfg.trainer.eval_every > 0 and bool(self.dev)
        if self.start_step > 0 or not (dev or self.probe):
            return {}
        metrics = {**self._greedy_metrics(dev, bool(self.probe)), **(self._closed_book_metrics() if dev else {})}
        self.logger.log(0, metrics)
        self.gauges.record(0, metrics)
        return metrics

    def report(self, before: dict[str, float], after: dict[str, float]) -> None:
        """Print the dev table of the starting policy beside the trained one, with the closed-book EM, and a row
        per question type."""
        def split(m: dict[str, float], prefix: str) -> dict[str, float]:
            return {k.removeprefix(prefix): v for k, v in m.items() if k.startswith(prefix)}
        runs = {name: split(m, "eval/") for name, m in (("start", before), ("trained", after)) if m}
        closed = {name: split(m, "closed_book/") for name, m in (("start", before), ("trained", after))
                  if any(k.startswith("closed_book/") for k in m)}
        if runs:
            rows = {name: {**m, **({"closed_book_em": closed[name]["em"]} if name in closed else {})}
                    for name, m in runs.items()}
            print(f"dev split, {len(self.dev)} questions, greedy (closed-book: searches answered from another "
                  f"world's index):")
            print(metrics_table(rows))
            if any(k.startswith("n_") for m in runs.values() for k in m):
                print(type_table(runs, closed))

    def log(self, step: int, rollout: StepRollout, batch: TrainBatch, scores: EpisodeScores,
            train: dict[str, float], evaluation: dict[str, float], times: dict[str, float]) -> dict[str, float]:
        episodes = rollout.episodes
        figures = {**episode_metrics(episodes, scores),
                   **type_metrics(episodes, [self.types.get(e.question_id) for e in episodes], scores)}
        groups = len({e.question_id for e in episodes})  # without dynamic sampling: read off the step's scores
        sampling = rollout.sampling or {"informative_groups": 100.0 * len(informative_groups(
            [e.question_id for e in episodes], scores.rewards)) / max(1, groups)}
        generated = batch.num_loss_tokens  # the episodes' generated tokens, summed in numpy
        metrics = {"reward/mean": figures.pop("reward_mean"), "reward/std": figures.pop("reward_std"),
                   **{f"reward/{name}": float(values.mean()) for name, values in scores.weighted.items()},
                   **{f"rollout/{k}": v for k, v in {**figures, **sampling}.items()},
                   "rollout/shared_state_turns": shared_state_rate(episodes),
                   **{f"search/{k}": v for k, v in search_metrics(episodes, times.get("rollout", 0.0)).items()},
                   **{f"train/{k}": v for k, v in train.items()}, **evaluation, **rollout.async_metrics,
                   **{f"time/{k}": v for k, v in times.items()},
                   "time/step": sum(times.values()),
                   "throughput/rollout_tokens_per_s": generated / max(times.get("rollout", 0.0), 1e-9),
                   "throughput/train_tokens_per_s": float(batch.lengths.sum()) / max(times.get("update", 0.0), 1e-9)}
        self.logger.log(step + 1, metrics)
        self.gauges.record(step + 1, metrics)
        return metrics

    def watch(self, step: int, metrics: dict[str, float]) -> Any:
        """Warn (one line each) about stability monitors that crossed this step; with trainer.stop_on_collapse
        returns the first crossing, the run's stop reason (the loop checkpoints and ends), else None."""
        crossings = self.monitors.check(step + 1, metrics)
        for crossing in crossings:
            print(crossing, file=sys.stderr, flush=True)
        return crossings[0] if crossings and self.cfg.trainer.stop_on_collapse else None

    def checkpoint(self, step: int, stopping: bool = False) -> Path | None:
        """Every `trainer.checkpoint_every` steps, after the last, and when the run stops on a collapse: written
        aside, then renamed (kr1/run/run_state.py)."""
        return self.state.save(step, self.learners, self.rollouts) if self.state.due(step, stopping) else None

    def close(self) -> None:
        """Stop whatever started (also after a start that failed half-way) and free the directory."""
        if getattr(self, "reference_thread", None) is not None:
            self.reference_thread.shutdown(wait=True, cancel_futures=True)
        parts = [getattr(self, name, None) for name in ("logger", "engines", "reference", "learners", "retriever")]
        for part in parts:
            if part is not None:
                part.close()
        if getattr(self, "scorer", None) is not None:
            stop_actors([self.scorer])
        if getattr(self, "placement", None) is not None:
            self.placement.close()
        self.lock.release()


def training_questions(cfg: Config, questions: list[QARecord], tokenizer: Any) -> list[QARecord]:
    """The training split without the questions whose prompt is longer than data.max_prompt_tokens, dropped once
    at start and counted in one line; none left: a UserError."""
    limit = cfg.data.max_prompt_tokens
    kept = within_prompt_limit(questions, tokenizer, cfg.rollout.prompt_template, limit)
    if not kept:
        raise UserError(f"all {len(questions):,} training questions are longer than data.max_prompt_tokens={limit} "
                        "prompt tokens: raise data.max_prompt_tokens (below rollout.max_total_tokens)")
    if len(kept) < len(questions):
        print(f"dropped {len(questions) - len(kept):,} of {len(questions):,} training questions longer than "
              f"data.max_prompt_tokens={limit} prompt tokens", file=sys.stderr, flush=True)
    return kept
