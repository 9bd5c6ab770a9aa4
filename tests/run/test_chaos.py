"""Chaos: a seeded schedule kills an actor of every role at moments inside the trained run's steps, two of them
at once, and the run still ends with the undisturbed run's metrics, each step logged once, no actor left.

The trained run (tests/conftest.py: 3 steps, 2 learner ranks, 2 separate reference workers, dynamic sampling,
a two-file mixture) is the undisturbed twin."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path

import pytest
import ray

from actors.learner import LearnerGroup
from actors.reference import ReferencePool
from actors.rollout_engine import RolloutEnginePool
from kr1.config import load_config
from kr1.run.loop import run_steps
from kr1.run.metrics import TIMING_PREFIXES
from kr1.run.training_run import TrainingRun

pytestmark = pytest.mark.numerics  # a disturbed run compared with the undisturbed one to 1e-5

# the driver's calls at which a kill may be scheduled, (class, method): the kill lands while the call works
# (a retriever shard's while the engines search, inside their rollout)
MOMENTS = {"rollout": (RolloutEnginePool, "rollout_refs"), "score": (TrainingRun, "_score"),
           "reference": (ReferencePool, "logprobs"), "update": (LearnerGroup, "update")}
ROLES = ("retriever-shard", "rollout-engine", "learner-rank", "reference-worker", "reward-scorer")


def chaos_schedule(seed: int) -> list[tuple[str, int, float, tuple[str, ...]]]:
    """(moment, its n-th call, seconds after the call starts, roles killed then): every role once, one moment
    with two roles (the overlap), at most one learner and one reference kill (each costs a recovery)."""
    rng = random.Random(seed)
    roles = list(ROLES)
    rng.shuffle(roles)
    pair, singles = tuple(roles[:2]), roles[2:]
    # a 3-step run makes at least 9 rollout calls (dynamic sampling's rounds, the evaluations), 3 of each other
    # the learner dies in step 3's update, after the step-2 checkpoint: reloaded from it, step 3 redone
    calls = {"rollout": (1, 8), "score": (1, 3), "reference": (1, 3), "update": (3, 3)}
    where = {"retriever-shard": "rollout", "rollout-engine": "rollout", "learner-rank": "update",
             "reference-worker": "reference", "reward-scorer": "score"}
    out = []
    for group in [pair, *[(r,) for r in singles], (rng.choice(["retriever-shard", "rollout-engine"]),)]:
        moment = rng.choice([where[r] for r in group])
        out.append((moment, rng.randint(*calls[moment]), round(rng.uniform(0.0, 0.3), 2), group))
    return out


def _victim(run: TrainingRun, role: str, rng: random.Random):
    actors = {"retriever-shard": run.retriever.shards, "rollout-engine": run.engines.engines,
              "learner-rank": run.learners.workers, "reference-worker": run.reference.workers,
              "reward-scorer": [run.scorer]}[role]
    return rng.choice(actors)


def test_kills_of_every_role_two_at_once_leave_the_undisturbed_metrics(trained_run, trained_run_overrides, tmp_path,
                                                                       monkeypatch, capsys):
    schedule = chaos_schedule(seed=7)
    assert len(schedule) >= 5 and {r for *_, roles in schedule for r in roles} == set(ROLES)
    assert any(len(roles) == 2 for *_, roles in schedule)
    rng, runs, killed, timers = random.Random(7), [], [], []
    counts = {name: 0 for name in MOMENTS}
    lock = threading.RLock()

    def kill(roles: tuple[str, ...]) -> None:
        with lock:
            for role in roles:
                actor = _victim(runs[0], role, rng)
                # restartable roles come back by themselves (Ray restarts them); learners and reference workers
                # are rebuilt by the run's recovery
                ray.kill(actor, no_restart=role in ("learner-rank", "reference-worker"))
                killed.append(role)

    def wrap(name: str, cls, method: str) -> None:
        real = getattr(cls, method)

        def hooked(self, *args, **kwargs):
            with lock:
                counts[name] += 1
                due = [(delay, roles) for moment, n, delay, roles in schedule if moment == name and n == counts[name]]
            for delay, roles in due:
                # a learner or reference worker dies as the call starts, so the call fails and the run recovers;
                # a restartable actor dies `delay` seconds into the call, while it works
                rebuilt = tuple(r for r in roles if r in ("learner-rank", "reference-worker"))
                kill(rebuilt)
                timers.append(threading.Timer(delay, kill, (tuple(r for r in roles if r not in rebuilt),)))
                timers[-1].start()
            return real(self, *args, **kwargs)

        monkeypatch.setattr(cls, method, hooked)

    for name, (cls, method) in MOMENTS.items():
        wrap(name, cls, method)
    real_init = TrainingRun.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        runs.append(self)

    monkeypatch.setattr(TrainingRun, "__init__", init)
    before = set(ray.util.list_named_actors())
    out = tmp_path / "run"
    run = TrainingRun(load_config("default", trained_run_overrides(out, **{"trainer.max_recoveries": 4})), quiet=True)
    try:
        history = run_steps(run, quiet=True)
    finally:
        for timer in timers:
            timer.join()
        run.close()
    said = capsys.readouterr().err
    assert sorted(killed) == sorted(r for *_, roles in schedule for r in roles), (schedule, killed, counts)
    assert len(history) == 3
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    whole = [json.loads(line) for line in (trained_run.out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [r["step"] for r in whole] == [0, 1, 2, 3], said  # each step once
    divergence = 0.0
    for left, right in zip(whole, rows):
        for key, value in left.items():
            if not key.startswith(TIMING_PREFIXES):
                assert right[key] == pytest.approx(value, abs=1e-5), (left["step"], key, schedule, said)
                divergence = max(divergence, abs(right[key] - value))
    print(f"chaos: {len(killed)} kills {schedule}; {said.count('worker died')} recoveries; largest divergence "
          f"{divergence:.2g}")
    # the reference's death alone: only it is rebuilt and the step redone on the learners as they are; the
    # learner's: both pools rebuilt from the last checkpoint (or the starting model)
    assert "a reference worker died" in said and "rebuilding the reference workers and redoing step" in said, said
    assert "a learner worker died" in said and "rebuilding from the last checkpoint" in said, said
    assert f"resumed from {out / 'checkpoints' / 'step_000002'}" in said, said
    assert set(ray.util.list_named_actors()) <= before, "actors left behind"
