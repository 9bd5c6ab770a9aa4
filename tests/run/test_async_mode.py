"""trainer.mode=async on real pools: at staleness 1 the engines roll out the next step while the learner
trains, the learner trains on one-update-old groups with the decoupled objective, and a run resumed from
a checkpoint, with its engine killed mid-rollout, equals the uninterrupted one. (At staleness 0 it is the
sync loop: tests/run/test_driver_faults.py, beside the sync run it is compared with.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import ray

from actors.rollout_engine import RolloutEnginePool
from kr1.config import load_config
from kr1.run.loop import one_step, train
from kr1.run.metrics import TIMING_PREFIXES
from kr1.run.run_logger import PhaseTimer
from kr1.run.training_run import TrainingRun

pytestmark = pytest.mark.numerics  # runs compared to 1e-5

# two steps, a checkpoint after each; short episodes (2 turns) and at most one extra sampling round keep the
# three runs below quick
ASYNC_RUN = {"trainer.total_steps": 2, "trainer.checkpoint_every": 1, "trainer.mode": "async",
             "algorithm.dynamic_sampling": True, "algorithm.max_sampling_rounds": 2, "rollout.max_turns": 2}
# what differs between equal runs: wall times, and the waits and idle times they measure
UNCOMPARED = TIMING_PREFIXES + ("async/learner_idle_s", "async/engine_idle_s", "throughput/")


def _steps(cfg, steps: int) -> None:
    """The driver loop's first `steps` steps of a run configured for more, then the pools stop (as in a run
    killed after a checkpoint)."""
    run, timer = TrainingRun(cfg, quiet=True), PhaseTimer()
    try:
        run.evaluate_start()
        for step in range(steps):
            one_step(run, step, timer)
    finally:
        run.close()


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _assert_same_rows(left: list[dict], right: list[dict]) -> None:
    assert [r["step"] for r in left] == [r["step"] for r in right]
    for a, b in zip(left, right):
        for key, value in a.items():
            if not key.startswith(UNCOMPARED):
                assert b[key] == pytest.approx(value, abs=1e-5), (a["step"], key)


@pytest.fixture(scope="module")
def async_run(ray_session, untrained_run_overrides, tmp_path_factory) -> Path:
    """Two async steps at staleness 1, uninterrupted, with dynamic sampling (its extra rounds roll out on the
    current policy): checkpoints at steps 1 and 2."""
    out = tmp_path_factory.mktemp("async") / "run"
    train(load_config("default", untrained_run_overrides(out, **ASYNC_RUN)), quiet=True)
    return out


def test_async_trains_on_one_update_old_groups_with_the_decoupled_objective(async_run):
    rows = _metrics(async_run)
    steps = [r for r in rows if r["step"] >= 1]
    # step 0's batch starts with step 1's beside it; step 1 takes what was sampled before step 0's update
    assert [r["async/staleness_mean"] for r in steps] == [0.0, 1.0]
    assert [r["async/queue_depth"] for r in steps] == [1.0, 0.0]
    assert all(r["async/dropped_groups"] == 0 for r in steps)
    # dynamic sampling rolled out extra rounds (on the current policy) where the queued groups taught nothing
    assert any(r["rollout/sampling_rounds"] > 1 for r in steps), [r["rollout/sampling_rounds"] for r in steps]
    assert "train/behaviour_weight" not in steps[0]  # on-policy: today's loss
    for r in steps[1:]:  # the engine's weights are one update old: the weights differ from 1, and are logged
        assert 0.5 < r["train/behaviour_weight"] < 2.0 and r["train/behaviour_weight_max"] > 1.0
        assert 0.0 <= r["train/behaviour_truncated"] < 0.5
    snapshot = async_run / "checkpoints" / "step_000001" / "rollout_queue.pt"
    assert snapshot.is_file(), "the queued rollout of step 2 is part of the step-1 checkpoint"


def test_an_async_run_resumed_with_its_engine_killed_equals_the_uninterrupted_one(async_run, untrained_run_overrides,
                                                                                  tmp_path, monkeypatch):
    """One step with the engine killed while it plays the first two steps' prompts, then a resumed second step
    that trains on the rollout the checkpoint kept: every row equals the uninterrupted run's."""
    split = tmp_path / "split"
    started = RolloutEnginePool.rollout_refs
    killed = []

    def rollout_refs_then_kill(self, questions, n_samples, greedy=False, seed=None, retriever=None):
        refs = started(self, questions, n_samples, greedy, seed, retriever)
        if not greedy and not killed and seed == 1:  # step 1's rollout, queued behind step 0's: both are lost
            killed.append(seed)
            ray.kill(self.engines[0], no_restart=False)
        return refs

    monkeypatch.setattr(RolloutEnginePool, "rollout_refs", rollout_refs_then_kill)
    overrides = untrained_run_overrides(split, **ASYNC_RUN)
    _steps(load_config("default", overrides), 1)
    assert killed, "the engine was never killed"
    monkeypatch.setattr(RolloutEnginePool, "rollout_refs", started)
    train(load_config("default", overrides + ["trainer.resume=true"]), quiet=True)
    _assert_same_rows(_metrics(async_run), _metrics(split))
    assert _metrics(split)[-1]["async/staleness_mean"] == 1.0  # the kept rollout, sampled before step 2's update
