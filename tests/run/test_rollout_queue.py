"""The async loop's queue of rollouts, on real object refs: what it starts ahead, the lag it reports, what it
drops, and its snapshot for a checkpoint."""

from __future__ import annotations

import ray

from kr1.rollout.episodes import Episode
from kr1.run.rollout_queue import RolloutQueue


class Engines:
    """Stands in for the engine pool's `rollout_refs`: one finished part per call, naming its step."""

    def __init__(self) -> None:
        self.started: list[int] = []

    def __call__(self, step: int) -> list[ray.ObjectRef]:
        self.started.append(step)
        return [ray.put([Episode(f"q{step}", 0, [1, 2])])]


def test_the_queue_starts_at_most_depth_steps_ahead_and_reports_each_batchs_lag(ray_session):
    engines = Engines()
    queue = RolloutQueue(engines, depth=2, groups_per_step=4)
    queue.fill(0, version=0, last_step=10)
    assert engines.started == [0, 1, 2]
    taken = queue.take(0, version=0)
    assert [e.question_id for e in taken.episodes] == ["q0"] and taken.lag == 0 and taken.depth == 2
    queue.fill(1, version=1, last_step=10)  # step 3 starts on the weights after one update
    assert engines.started == [0, 1, 2, 3]
    assert [queue.take(s, version=s).lag for s in (1, 2)] == [1, 2]
    queue.fill(3, version=3, last_step=5)  # never past the run's last step
    assert engines.started == [0, 1, 2, 3, 4]


def test_a_batch_outside_the_bound_is_dropped_and_rolled_out_again(ray_session):
    engines = Engines()
    queue = RolloutQueue(engines, depth=1, groups_per_step=4)
    queue.fill(0, version=0, last_step=10)
    queue.take(0, version=0)
    # the learner went back to an older policy (a recovery): step 1's batch was sampled by a lost one
    taken = queue.take(1, version=-1)
    assert taken.dropped_groups == 4 and taken.lag == 0 and engines.started == [0, 1, 1]


def test_a_redone_step_takes_the_batch_it_took_before(ray_session):
    # the step a dead reference worker interrupted is redone on the same policy, with the same batch
    engines = Engines()
    queue = RolloutQueue(engines, depth=1, groups_per_step=4)
    queue.fill(0, version=0, last_step=10)
    first = queue.take(0, version=0)
    queue.fill(0, version=0, last_step=10)
    again = queue.take(0, version=0)
    assert again.episodes == first.episodes and again.lag == 0 and engines.started == [0, 1]


def test_a_snapshot_keeps_the_queued_batches_and_a_restored_queue_serves_them(ray_session):
    engines = Engines()
    queue = RolloutQueue(engines, depth=2, groups_per_step=4)
    queue.fill(0, version=0, last_step=10)
    queue.take(0, version=0)
    saved = queue.snapshot()
    assert [(d["step"], d["version"]) for d in saved] == [(1, 0), (2, 0)]
    restored = RolloutQueue(engines, depth=2, groups_per_step=4)
    restored.restore(saved)
    restored.fill(1, version=1, last_step=10)
    taken = restored.take(1, version=1)
    assert taken.lag == 1 and [e.question_id for e in taken.episodes] == ["q1"]
    assert engines.started == [0, 1, 2, 3]  # only step 3 was new
    assert restored.clear() == 8  # steps 2 and 3, four groups each
