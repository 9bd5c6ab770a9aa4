"""A step's rollout as one value, and the two sources it comes from (trainer.mode sync or async).

    rollouts = SyncRollouts(engines, loader, cfg)   # or AsyncRollouts(RolloutQueue(...))
    rollout = rollouts.take(step)                   # StepRollout: episodes, lag, async figures
    rollout = sample_informative(rollout, step, ...)  # dynamic sampling: more rounds, scores, reference started

The loop hands the `StepRollout` on to scoring, the reference pass, the batch and the log; the
run object keeps none of it. Under dynamic sampling a group is kept only once its rewards are
known, so each round's scoring comes before its selection; the reference pass of the groups a
round keeps then starts at once (in a driver thread, when the engines do not share the GPUs),
so it runs while the next round rolls out and is scored.
"""

from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

from kr1.config import Config
from kr1.rollout.rewards import EpisodeScores, informative_groups
from kr1.run.rollout_queue import RolloutQueue
from kr1.training.prompt_loader import PromptLoader


@dataclass
class StepRollout:
    """What one step's rollout hands on through the loop."""

    episodes: list[Any]
    lag: int = 0  # policy updates between the sampling policy and the learner (async mode)
    async_metrics: dict[str, float] = field(default_factory=dict)  # async/* figures of this step
    sampling: dict[str, float] = field(default_factory=dict)  # rollout/* figures of dynamic sampling
    scores: EpisodeScores | None = None  # dynamic sampling scored every episode already
    # reference log-probs started while sampling: (rows, (rows, T) or None) in episode order
    reference: list[tuple[int, concurrent.futures.Future]] = field(default_factory=list)


class SyncRollouts:
    """trainer.mode=sync: the engines roll out this step's prompts now, on the latest weights."""

    waits_for_weights = True  # the weight sync finishes before the next rollout starts

    def __init__(self, engines: Any, loader: PromptLoader, cfg: Config) -> None:
        self.engines, self.loader, self.cfg = engines, loader, cfg

    def take(self, step: int) -> StepRollout:
        questions = self.loader.batch(step)
        return StepRollout(self.engines.rollout(questions, self.cfg.rollout.n_samples,
                                                seed=self.cfg.trainer.seed + step))

    def snapshot(self) -> list[dict[str, Any]] | None:
        return None  # nothing is in flight between steps

    def restore(self, saved: list[dict[str, Any]] | None) -> None:
        pass

    def clear(self) -> None:
        pass


class AsyncRollouts:
    """trainer.mode=async: this step's episodes from the queue, which first starts the rollouts of the next
    `max_staleness` steps (on the weights the engines were last sent: `step` updates)."""

    waits_for_weights = False  # engines load new weights after the rollouts they already have

    def __init__(self, queue: RolloutQueue, last_step: int) -> None:
        self.queue, self.last_step = queue, last_step
        self.dropped = 0.0  # groups dropped since the last step taken (a resume or recovery clears the queue)

    def take(self, step: int) -> StepRollout:
        self.queue.fill(step, step, self.last_step)
        taken = self.queue.take(step, step)
        metrics = {"async/staleness_mean": float(taken.lag), "async/dropped_groups": self.dropped +
                   taken.dropped_groups, "async/queue_depth": float(taken.depth),
                   "async/learner_idle_s": taken.waited_s, "async/engine_idle_s": taken.engine_idle_s}
        self.dropped = 0.0
        return StepRollout(taken.episodes, taken.lag, metrics)

    def snapshot(self) -> list[dict[str, Any]] | None:
        return self.queue.snapshot()  # the rollouts already started are part of the state: resumed exactly

    def restore(self, saved: list[dict[str, Any]] | None) -> None:
        """What was queued was sampled by policies past the checkpoint's: dropped, and the checkpoint's queue
        (if it has one) taken instead."""
        self.clear()
        if saved is not None:
            self.queue.restore(saved)

    def clear(self) -> None:
        self.dropped += float(self.queue.clear())


def sample_informative(first: StepRollout, step: int, cfg: Config, loader: PromptLoader, engines: Any,
                       score: Callable[[Sequence[Any]], EpisodeScores],
                       reference: Callable[[Sequence[Any]], concurrent.futures.Future] | None) -> StepRollout:
    """Dynamic sampling: more prompts are rolled out until `trainer.prompts_per_step` groups have rewards that
    differ (at most `algorithm.max_sampling_rounds` rounds), and those groups are the step's episodes, with the
    scores already computed (every episode is scored once) and, given `reference`, their reference pass
    started as soon as each round's groups were chosen."""
    wanted, questions = cfg.trainer.prompts_per_step, loader.batch(step)
    rounds = [(first.episodes, score(first.episodes))]
    informative = [(0, rows) for rows in informative_groups([e.question_id for e in first.episodes],
                                                            rounds[0][1].rewards)]
    sampling = {"sampling_rounds": 1.0, "informative_groups": 100.0 * len(informative) / max(1, len(questions))}
    started: list[tuple[int, concurrent.futures.Future]] = []

    def start_reference(kept: list[tuple[int, list[int]]]) -> None:
        if reference is not None and kept:
            started.append((sum(len(rows) for _, rows in kept),
                            reference([rounds[r][0][i] for r, rows in kept for i in rows])))

    start_reference(informative[:wanted])
    asked = {q.id for q in questions}
    for round_ in range(1, cfg.algorithm.max_sampling_rounds):
        if len(informative) >= wanted:
            break
        extra = loader.extra_batch(step, round_, asked)
        asked |= {q.id for q in extra}
        more = engines.rollout(extra, cfg.rollout.n_samples, seed=cfg.trainer.seed + step + round_ * 1_000_003)
        rounds.append((more, score(more)))
        found = [(len(rounds) - 1, rows)
                 for rows in informative_groups([e.question_id for e in more], rounds[-1][1].rewards)]
        start_reference(found[:max(0, wanted - len(informative))])
        informative += found
        sampling["sampling_rounds"] += 1
    kept = informative[:wanted]
    sampling["trained_groups"] = float(len(kept))
    if not kept:  # no group taught anything: the step's own, whose reference pass is not started
        return replace(first, sampling=sampling, scores=rounds[0][1])
    return replace(first, episodes=[rounds[r][0][i] for r, rows in kept for i in rows], sampling=sampling,
                   scores=EpisodeScores.concat([rounds[r][1].select(rows) for r, rows in kept]), reference=started)

