"""The pieces of a training run, each step of the loop as one method (the loop is in kr1/run/loop.py).

Start-up finds or builds the inputs, starts or joins Ray, reserves placement groups and
starts every pool: retriever shards, rollout engines, learner group, reference, reward
scorer. With `trainer.resume=true` it reloads the latest complete checkpoint (policy,
optimizer, RNG states, step), pushes those weights to the engines, and drops what a killed
run logged after that step, so every step is logged once.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch

from actors.learner import LearnerGroup
from actors.reference import ReferencePool
from actors.reward import start_scorer
from kr1.atomic_write import write_json
from kr1.cluster import ensure_ray, stop_actors
from kr1.config import Config, expand_path, to_yaml
from kr1.errors import writes_to
from kr1.rollout.rewards import EpisodeScores, informative_groups
from kr1.run.assets import resolve_assets
from kr1.run.evaluation import evaluate, evaluate_closed_book
from kr1.run.metrics import episode_metrics, metrics_table, search_metrics, type_metrics, type_table
from kr1.run.placement import Placement, check_cluster_fits
from kr1.run.ray_metrics import RunGauges
from kr1.run.pools import start_engines, start_retriever
from kr1.run.resume_check import INPUTS_FILE, check_resume, input_fingerprints
from kr1.run.rollout_queue import QUEUE_FILE, RolloutQueue
from kr1.run.run_lock import RunLock
from kr1.run.run_logger import RunLogger
from kr1.run.weight_sync import make_weight_sync
from kr1.training.algorithms import ADVANTAGE_ESTIMATORS
from kr1.training.batch import TrainBatch
from kr1.training.checkpoint import CheckpointDirs, read_trainer_state, write_trainer_state
from kr1.training.memory_plan import check_memory_plan
from kr1.training.prompt_loader import PromptLoader
from kr1.training.stability_monitors import StabilityMonitors


class TrainingRun:
    def __init__(self, cfg: Config, quiet: bool = False) -> None:
        self.cfg, self.quiet = cfg, quiet
        if cfg.cluster.memory_plan:
            check_memory_plan(cfg)
        # join or start Ray first: a cluster we cannot reach, or that can never hold the run, fails before
        # any building starts
        ensure_ray(cfg.cluster.address, cfg.cluster.num_cpus, cfg.cluster.dashboard_host, include_dashboard=True)
        check_cluster_fits(cfg)
        self.assets = resolve_assets(cfg, progress=not quiet, decoy=cfg.trainer.eval_closed_book)
        self.loader = PromptLoader(self.assets.questions("train"), cfg.trainer.prompts_per_step, cfg.trainer.seed)
        self.golds = {q.id: q.golden_answers for q in self.loader.questions}
        self.supporting = {q.id: q.supporting_titles for q in self.loader.questions}
        self.types = {q.id: q.type for q in self.loader.questions}
        self.dev = self.assets.questions("dev")[:cfg.trainer.eval_prompts]
        self.inputs = input_fingerprints(self.assets.model_path, self.assets.index_dir,
                                         self.assets.split_paths("train"))
        # the run directory appears only once every input has been found and validated, and holds one run
        self.output_dir = expand_path(cfg.trainer.output_dir)
        self.lock = RunLock.acquire(self.output_dir)
        try:
            self._start()
        except BaseException:  # what started is stopped, and the directory is free for the next try
            self.close()
            raise

    def _start(self) -> None:
        from transformers import AutoTokenizer  # 3 s of imports: not for a command that only fails on its input

        cfg, model = self.cfg, self.assets.model_path
        self.checkpoints = CheckpointDirs(self.output_dir)
        resume_from = self._resume_point() if cfg.trainer.resume else None  # before any actor starts
        with writes_to("the run's config", self.output_dir):
            (self.output_dir / "config.yaml").write_text(to_yaml(cfg))
        self.pad_id = AutoTokenizer.from_pretrained(model).pad_token_id or 0
        self.placement = Placement(cfg)
        self.retriever = start_retriever(cfg.retriever, self.assets.index_dir)
        self.learners = LearnerGroup(cfg, model, self.placement)
        self.reference = ReferencePool(cfg, model, self.placement, self.learners)
        self.engines = start_engines(cfg, model, self.retriever, self.placement)
        self.scorer = start_scorer(cfg.reward)
        self.weight_sync = make_weight_sync(cfg.learner.weight_sync)
        self.recoveries = 0
        self.monitors, self.stop_reason, self.sampling, self.scored = StabilityMonitors(cfg.monitor), None, {}, None
        # trainer.mode=async: later steps' rollouts run while the learner trains (policy version = steps done)
        self.queue = RolloutQueue(self.start_rollout, cfg.algorithm.max_staleness, cfg.trainer.prompts_per_step) \
            if cfg.trainer.mode == "async" else None
        self.lag, self.async_metrics = 0, {}
        self.start_step = self._resume(*resume_from) if resume_from else 0
        # rows a killed run logged past the checkpoint are dropped: each step is logged once
        self.logger = RunLogger(self.output_dir, cfg.trainer.total_steps, quiet=self.quiet, start_step=self.start_step)
        self.gauges = RunGauges(self.output_dir.name)  # the headline figures in Ray's metrics (Prometheus, Grafana)
        random.seed(cfg.trainer.seed)
        np.random.seed(cfg.trainer.seed)

    # --- one method per step of the loop -------------------------------------------------
    def rollout(self, step: int) -> list[Any]:
        """Sampled episodes for this step's prompts, `rollout.n_samples` per prompt. With dynamic sampling, more
        prompts are rolled out until `trainer.prompts_per_step` groups have rewards that differ (at most
        `algorithm.max_sampling_rounds` rounds), and those groups are the step's episodes; their scores are
        kept for `score`, so every episode is scored once."""
        cfg, questions = self.cfg, self.loader.batch(step)
        if self.queue is None:
            episodes = self.engines.rollout(questions, cfg.rollout.n_samples, seed=cfg.trainer.seed + step)
        else:
            episodes = self._take_rollout(step)
        self.sampling, self.scored = {"sampling_rounds": 1.0}, None
        if not cfg.algorithm.dynamic_sampling:
            return episodes
        rounds = [(episodes, ray.get(self.score(episodes)))]
        informative = [(0, rows) for rows in informative_groups([e.question_id for e in episodes],
                                                                rounds[0][1].rewards)]
        self.sampling["informative_groups"] = 100.0 * len(informative) / max(1, len(questions))
        asked = {q.id for q in questions}
        for round_ in range(1, cfg.algorithm.max_sampling_rounds):
            if len(informative) >= cfg.trainer.prompts_per_step:
                break
            extra = self.loader.extra_batch(step, round_, asked)
            asked |= {q.id for q in extra}
            more = self.engines.rollout(extra, cfg.rollout.n_samples, seed=cfg.trainer.seed + step + round_ * 1_000_003)
            rounds.append((more, ray.get(self.score(more))))
            informative += [(len(rounds) - 1, rows)
                            for rows in informative_groups([e.question_id for e in more], rounds[-1][1].rewards)]
            self.sampling["sampling_rounds"] += 1
        kept = informative[:cfg.trainer.prompts_per_step]
        self.sampling["trained_groups"] = float(len(kept))
        if not kept:  # no group taught anything: the step's own
            self.scored = rounds[0][1]
            return episodes
        self.scored = EpisodeScores.concat([rounds[r][1].select(rows) for r, rows in kept])
        return [rounds[r][0][i] for r, rows in kept for i in rows]

    def start_rollout(self, step: int) -> list[ray.ObjectRef]:
        """The engines start on `step`'s prompts; one ref per engine slice."""
        return self.engines.rollout_refs(self.loader.batch(step), self.cfg.rollout.n_samples,
                                         seed=self.cfg.trainer.seed + step)

    def _take_rollout(self, step: int) -> list[Any]:
        """trainer.mode=async: this step's episodes from the queue, which first starts the rollouts of the next
        algorithm.max_staleness steps (on the weights the engines were last sent: `step` updates)."""
        self.queue.fill(step, step, self.cfg.trainer.total_steps)
        taken = self.queue.take(step, step)
        self.lag = taken.lag
        dropped = self.async_metrics.get("async/dropped_groups", 0.0)  # counted since the last step's log
        self.async_metrics = {"async/staleness_mean": float(taken.lag), "async/dropped_groups": dropped +
                              taken.dropped_groups, "async/queue_depth": float(taken.depth),
                              "async/learner_idle_s": taken.waited_s, "async/engine_idle_s": taken.engine_idle_s}
        return taken.episodes

    def set_loop_mode(self, mode: str, max_staleness: int = 1) -> None:
        """Switch between sync and async steps (the async benchmark runs both on one set of pools); rollouts
        already queued stay, within the new bound."""
        if mode == "sync":
            self.queue = None
        else:
            groups = self.cfg.trainer.prompts_per_step
            self.queue = self.queue or RolloutQueue(self.start_rollout, max_staleness, groups)
            self.queue.depth = max_staleness
        self.lag = 0

    def train_batch(self, episodes: list[Any]) -> TrainBatch:
        """The learner's batch; episodes sampled by an older policy bring their behaviour log-probs (the decoupled
        objective), on-policy ones do not (the loss is then sync mode's exactly)."""
        return TrainBatch.from_episodes(episodes, self.pad_id, behaviour=self.lag > 0)

    def score(self, episodes: list[Any]) -> ray.ObjectRef:
        """Start the reward scorer; returns at once so the reference pass runs meanwhile (scores the rollout
        already made are handed back as they are)."""
        if self.scored is not None:
            scored, self.scored = self.scored, None
            return ray.put(scored)
        golds = {e.question_id: self.golds[e.question_id] for e in episodes}
        return self.scorer.score.remote(episodes, golds, {q: self.supporting[q] for q in golds})

    def ref_logprobs(self, batch: TrainBatch) -> TrainBatch:
        self.engines.sleep()  # colocated vLLM frees GPU memory before the reference pass; a no-op otherwise
        return batch.with_fields(ref_logprobs=self.reference.logprobs(batch))

    def advantages(self, batch: TrainBatch, scores: EpisodeScores) -> TrainBatch:
        estimator = ADVANTAGE_ESTIMATORS[self.cfg.algorithm.advantage]
        adv = estimator(torch.tensor(np.array(scores.rewards)), torch.tensor(np.array(batch.group_ids)),
                        norm_by_std=self.cfg.algorithm.norm_by_std)
        return batch.with_fields(rewards=scores.rewards, advantages=adv.numpy().astype(np.float32))

    def update(self, batch: TrainBatch) -> dict[str, float]:
        return self.learners.update(batch)  # colocated engines sleep from ref_logprobs until sync_weights

    def sync_weights(self) -> None:
        """New weights to the engines; in async mode without waiting: each engine loads them after the rollouts
        it already has, and plays later calls (rollouts, evaluation) on them."""
        self.weight_sync.sync(self.learners, self.engines, wait=self.queue is None)

    def evaluate(self, step: int) -> dict[str, float]:
        """Greedy dev-split metrics every `trainer.eval_every` steps, and after the last (with the closed-book
        metrics there)."""
        every, last = self.cfg.trainer.eval_every, step + 1 == self.cfg.trainer.total_steps
        if not self.dev or every <= 0 or not (last or (step + 1) % every == 0):
            return {}
        return {**self._dev_metrics(), **(self._closed_book_metrics() if last else {})}

    def _dev_metrics(self) -> dict[str, float]:
        metrics, _ = evaluate(self.cfg, self.dev, self.engines)
        return {f"eval/{k}": v for k, v in metrics.items()}

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
        if self.start_step > 0 or self.cfg.trainer.eval_every <= 0 or not self.dev:
            return {}
        metrics = {**self._dev_metrics(), **self._closed_book_metrics()}
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

    def log(self, step: int, episodes: list[Any], batch: TrainBatch, scores: EpisodeScores,
            train: dict[str, float], evaluation: dict[str, float], times: dict[str, float]) -> dict[str, float]:
        rollout = {**episode_metrics(episodes, scores),
                   **type_metrics(episodes, [self.types.get(e.question_id) for e in episodes], scores)}
        if "informative_groups" not in self.sampling:  # without dynamic sampling: read off the step's scores
            groups = len({e.question_id for e in episodes})
            self.sampling["informative_groups"] = 100.0 * len(informative_groups(
                [e.question_id for e in episodes], scores.rewards)) / max(1, groups)
        generated = sum(e.generated_tokens for e in episodes)
        metrics = {"reward/mean": rollout.pop("reward_mean"), "reward/std": rollout.pop("reward_std"),
                   **{f"rollout/{k}": v for k, v in {**rollout, **self.sampling}.items()},
                   **{f"search/{k}": v for k, v in search_metrics(episodes, times.get("rollout", 0.0)).items()},
                   **{f"train/{k}": v for k, v in train.items()}, **evaluation, **self.async_metrics,
                   **{f"time/{k}": v for k, v in times.items()},
                   "time/step": sum(times.values()),
                   "throughput/rollout_tokens_per_s": generated / max(times.get("rollout", 0.0), 1e-9),
                   "throughput/train_tokens_per_s": float(batch.lengths.sum()) / max(times.get("update", 0.0), 1e-9)}
        self.logger.log(step + 1, metrics)
        self.gauges.record(step + 1, metrics)
        self.async_metrics = {}
        return metrics

    def watch(self, step: int, metrics: dict[str, float]) -> None:
        """Warn (one line each) about stability monitors that crossed this step; with trainer.stop_on_collapse
        the first crossing becomes the run's stop reason (the loop checkpoints and ends)."""
        crossings = self.monitors.check(step + 1, metrics)
        for crossing in crossings:
            print(crossing, file=sys.stderr, flush=True)
        if crossings and self.cfg.trainer.stop_on_collapse:
            self.stop_reason = crossings[0]

    def checkpoint(self, step: int) -> Path | None:
        """Every `trainer.checkpoint_every` steps, after the last, and when the run stops on a collapse: written
        aside, then renamed."""
        done = step + 1
        every = self.cfg.trainer.checkpoint_every
        if not (every > 0 and done % every == 0 or done == self.cfg.trainer.total_steps or self.stop_reason):
            return None
        latest = self.checkpoints.latest()
        kept = f"; the last complete one ({latest[1].name}) is untouched" if latest else ""
        # the error is read inside the partial directory: once it is removed, a full disk has room again
        with self.checkpoints.writing(done) as tmp, \
                writes_to(f"the step-{done} checkpoint", self.checkpoints.root, kept, probe=tmp):
            self.learners.save_checkpoint(str(tmp))
            torch.save({"numpy": np.random.get_state(), "torch": torch.get_rng_state()}, tmp / "rng_driver.pt")
            (tmp / "config.yaml").write_text(to_yaml(self.cfg))
            write_json(tmp / INPUTS_FILE, self.inputs)
            if self.queue is not None:  # the rollouts already started are part of the state: resumed exactly
                torch.save(self.queue.snapshot(), tmp / QUEUE_FILE)
            write_trainer_state(tmp, {"step": done, "data_position": self.loader.position(done),  # last
                                      "python_rng": repr(random.getstate()), "time": time.time()})
        return self.checkpoints.path(done)

    def _resume_point(self) -> tuple[int, Path] | None:
        """The checkpoint to resume from, once it is known to train what this run trains."""
        for path in self.checkpoints.remove_partial():
            print(f"trainer.resume: removed {path.name}, left by a run killed while writing it", file=sys.stderr)
        for _, path, damage in self.checkpoints.scan():
            if damage:
                print(f"trainer.resume: skipping {path}: {damage}", file=sys.stderr)
        latest = self.checkpoints.latest()
        if latest is None:
            print(f"trainer.resume: no checkpoint in {self.checkpoints.root}, starting from step 0", file=sys.stderr)
            return None
        for note in check_resume(self.cfg, latest[1], self.inputs):
            print(note, file=sys.stderr)
        return latest

    def _resume(self, step: int, path: Path) -> int:
        self.learners.load_checkpoint(str(path))
        rng = torch.load(path / "rng_driver.pt", weights_only=False)
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
        if self.queue is not None:  # what was queued was sampled by policies past the checkpoint's, or is kept
            dropped = self.queue.clear()
            if (path / QUEUE_FILE).is_file():
                self.queue.restore(torch.load(path / QUEUE_FILE, weights_only=False))
            self.async_metrics = {"async/dropped_groups": float(dropped)}
        self.sync_weights()
        print(f"resumed from {path} (step {read_trainer_state(path)['step']})", file=sys.stderr)
        return step

    def recover(self, error: Exception, step: int) -> int:
        """After a learner or reference worker died in `step`: returns the step to go on from. A dead reference
        worker alone is rebuilt (it is the frozen starting model) and the step is redone with the learners as
        they are; a dead learner rebuilds both pools in their placement, reloads the last complete checkpoint
        (or the starting model), pushes it to the engines and drops what was logged after it. Any other
        error, or one past trainer.max_recoveries, stands."""
        lost = [name for name, pool in (("learner", self.learners), ("reference", self.reference))
                if not pool.alive()]
        if not lost or self.recoveries >= self.cfg.trainer.max_recoveries:
            raise error
        self.recoveries += 1
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        count = f"recovery {self.recoveries} of trainer.max_recoveries={self.cfg.trainer.max_recoveries}"
        if lost == ["reference"]:
            print(f"a reference worker died ({reason}); rebuilding the reference workers and redoing step {step + 1} "
                  f"({count})", file=sys.stderr, flush=True)
            self._stop_pools(self.reference)
            self.reference = ReferencePool(self.cfg, self.assets.model_path, self.placement, self.learners)
            return step
        print(f"a {' and a '.join(lost)} worker died ({reason}); rebuilding from the last checkpoint ({count})",
              file=sys.stderr, flush=True)
        self._stop_pools(self.reference, self.learners)
        self.learners = LearnerGroup(self.cfg, self.assets.model_path, self.placement)
        self.reference = ReferencePool(self.cfg, self.assets.model_path, self.placement, self.learners)
        latest = self.checkpoints.latest()
        step = self._resume(*latest) if latest else 0
        if not latest:  # the rebuilt learners hold the starting model: so must the engines
            random.seed(self.cfg.trainer.seed)
            np.random.seed(self.cfg.trainer.seed)
            if self.queue is not None:
                self.async_metrics = {"async/dropped_groups": float(self.queue.clear())}
            self.sync_weights()
        self.logger.close()
        self.logger = RunLogger(self.output_dir, self.cfg.trainer.total_steps, quiet=self.quiet, start_step=step)
        if step == 0:
            self.evaluate_start()
        return step

    @staticmethod
    def _stop_pools(*pools: Any) -> None:
        for pool in pools:
            for worker in pool.workers:  # no goodbye: a survivor may sit in a collective with the dead
                ray.kill(worker)
            pool.close()

    def close(self) -> None:
        """Stop whatever started (also after a start that failed half-way) and free the directory."""
        parts = [getattr(self, name, None) for name in ("logger", "engines", "reference", "learners", "retriever")]
        for part in parts:
            if part is not None:
                part.close()
        if getattr(self, "scorer", None) is not None:
            stop_actors([self.scorer])
        if getattr(self, "placement", None) is not None:
            self.placement.close()
        self.lock.release()
