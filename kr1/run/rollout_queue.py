"""Rollouts started ahead of the learner (trainer.mode=async): bounded staleness, one step batch per slot.

    queue = RolloutQueue(start=lambda step: engines.rollout_refs(...), depth=cfg.algorithm.max_staleness)
    queue.fill(step, version, last_step)       # start every step up to step + depth not yet started
    taken = queue.take(step, version)          # this step's episodes, how stale, how long the learner waited

A step's prompts go to the engines tagged with the policy version they will be sampled with: the
number of updates in the weights the engines were last sent (an engine runs its calls in order, so a
rollout started after a weight load samples with those weights, and an episode finishes on the weights
it began with). The learner at version v takes a batch of lag v - tag; one outside [0, depth] (after a
learner recovery rolled the policy back, or a resume with a smaller bound) is dropped, counted, and
rolled out again. `snapshot` waits for what is in flight, so a checkpoint can keep it: a resumed
run then trains on exactly the groups the uninterrupted one would have.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import ray

QUEUE_FILE = "rollout_queue.pt"  # a checkpoint's snapshot of the queue (trainer.mode=async)


@dataclass
class QueuedRollout:
    step: int  # whose prompts
    version: int  # updates in the weights that sample it
    refs: list[Any] = field(default_factory=list)  # one per engine slice, until done
    episodes: list[list[Any]] | None = None  # per engine slice, once fetched (or restored)


@dataclass
class TakenRollout:
    episodes: list[Any]
    lag: int  # policy updates between the sampler and the learner
    waited_s: float  # the learner's wait for it
    engine_idle_s: float  # the engines' idle seconds before they began it, summed
    dropped_groups: int  # groups thrown away as too stale on the way
    depth: int  # step batches in flight or done after this one was taken


class RolloutQueue:
    def __init__(self, start: Callable[[int], list[Any]], depth: int, groups_per_step: int) -> None:
        self.start, self.depth, self.groups_per_step = start, depth, groups_per_step
        self.items: dict[int, QueuedRollout] = {}
        self.last: QueuedRollout | None = None  # the batch taken last, for a step that is redone

    def fill(self, step: int, version: int, last_step: int) -> None:
        """Start the rollouts of steps step .. step + depth (below last_step) that have not started."""
        for s in range(step, min(step + self.depth + 1, last_step)):
            if s not in self.items and not self._taken_last(s):
                self.items[s] = QueuedRollout(s, version, self.start(s))

    def take(self, step: int, version: int) -> TakenRollout:
        """This step's episodes at most `depth` updates stale; a staler batch is rolled out again now."""
        dropped = 0
        item = self.items.pop(step, None)
        if item is None and self._taken_last(step):  # the step is redone (a recovery)
            item = self.last
        if item is not None and not 0 <= version - item.version <= self.depth:
            dropped, item = self.groups_per_step, None  # never read
        if item is None:
            item = QueuedRollout(step, version, self.start(step))
        began = time.perf_counter()
        fetched = item.episodes is None
        if fetched:
            item.episodes, item.refs = ray.get(item.refs), []
        waited = time.perf_counter() - began
        idle = sum(part[0].engine_idle_s for part in item.episodes if part) if fetched else 0.0
        self.last = item
        return TakenRollout([e for part in item.episodes for e in part], version - item.version, waited, idle,
                            dropped, len(self.items))

    def _taken_last(self, step: int) -> bool:
        return self.last is not None and self.last.step == step

    def snapshot(self) -> list[dict[str, Any]]:
        """Every queued step batch with its tag and episodes, waiting for those in flight (for a checkpoint)."""
        out = []
        for s in sorted(self.items):
            item = self.items[s]
            if item.episodes is None:
                item.episodes, item.refs = ray.get(item.refs), []
            out.append({"step": item.step, "version": item.version, "episodes": item.episodes})
        return out

    def restore(self, saved: list[dict[str, Any]]) -> None:
        """Queue the step batches of a checkpoint's snapshot (their lag is checked when they are taken)."""
        self.items = {d["step"]: QueuedRollout(d["step"], d["version"], [], d["episodes"]) for d in saved}

    def clear(self) -> int:
        """Forget everything queued; groups dropped."""
        count = len(self.items) * self.groups_per_step
        self.items, self.last = {}, None
        return count
