"""Reliability of the driver: SIGKILLed between checkpoints (its own local Ray and all), resumed with each
step logged once while three actors die inside the redone step; the dashboard it started listens on
127.0.0.1 only.

Actor faults of each role are in tests/actors/, bad input in tests/commands/test_bad_input.py, damaged
checkpoint directories in tests/training/test_checkpoint.py, and the cluster configs' exposure in
tests/test_cluster_configs.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import ray

from actors.rollout_engine import RolloutEnginePool
from kr1.config import load_config
from kr1.run.loop import train
from kr1.run.training_run import TrainingRun
from kr1.training.checkpoint import STATE_FILE, CheckpointDirs, damage

REPO = Path(__file__).resolve().parents[2]
VOLATILE = ("time/", "throughput/")  # wall-clock figures; everything else must match after a fault


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def killed_run(ray_session, untrained_run_overrides, tmp_path_factory):
    """`python -m kr1.driver` (its own local Ray) SIGKILLed, whole process group, after the step-3
    row and before the step-4 checkpoint; what it left, its step-3 row and its dashboard's sockets."""
    out = tmp_path_factory.mktemp("killed") / "run"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # never join the test session's Ray
    log = open(out.parent / "driver.log", "w")
    overrides = untrained_run_overrides(out, **{"trainer.total_steps": 4})
    driver = subprocess.Popen([sys.executable, "-m", "kr1.driver", *overrides],
                              cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    dashboard = None
    try:
        deadline = time.monotonic() + 400
        while not (out / "checkpoints" / "step_000002").is_dir() or \
                3 not in [r["step"] for r in _rows(out)]:
            assert driver.poll() is None, (out.parent / "driver.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the driver did not reach step 3 in time"
            if dashboard is None:
                dashboard = _dashboard_sockets(driver.pid)
            time.sleep(0.1)
    finally:
        try:
            family = psutil.Process(driver.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            family = []
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and its Ray: GCS, raylet, workers, dashboard
        for proc in family:  # any that left the group (Ray starts some workers in their own session)
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        driver.wait(timeout=60)
        log.close()
    psutil.wait_procs(family, timeout=30)
    return out, _rows(out), dashboard


def _rows(out: Path) -> list[dict]:
    rows = []
    if (out / "metrics.jsonl").is_file():
        for line in (out / "metrics.jsonl").read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:  # the row being written when the process died
                pass
    return rows


def _dashboard_sockets(group: int) -> tuple[list[str], list[str]] | None:
    """(command line, listening addresses) of the dashboard in a process group, once it listens."""
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmdline = proc.info["cmdline"] or []
            if os.getpgid(proc.pid) == group and any(a.endswith("dashboard/dashboard.py") for a in cmdline):
                listening = [c.laddr.ip for c in proc.net_connections("inet") if c.status == psutil.CONN_LISTEN]
                return (cmdline, listening) if listening else None
        except (psutil.Error, ProcessLookupError):
            continue
    return None


def test_a_driver_killed_between_checkpoints_resumes_with_each_step_once(killed_run, untrained_run_overrides,
                                                                        actor_process, monkeypatch, capsys):
    """Resume after SIGKILL, and, during the redone step 3, kill the engine and a retriever shard
    mid-rollout and the reward scorer mid-score: step 3 still equals the killed run's step 3."""
    out, killed_rows, _ = killed_run
    assert CheckpointDirs(out).latest()[0] == 2, "the kill came too late: step 4 was checkpointed"
    assert [r["step"] for r in killed_rows] == [0, 1, 2, 3]
    faults: list[tuple[str, int, int]] = []
    runs: list[TrainingRun] = []
    real_init, real_refs, real_score = TrainingRun.__init__, RolloutEnginePool.rollout_refs, TrainingRun.score

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        runs.append(self)

    def rollout_refs_then_kill(self, questions, n_samples, greedy=False, seed=None):
        if greedy or faults:  # only the first training rollout after the resume: step 3
            return real_refs(self, questions, n_samples, greedy, seed)
        engine, shard = self.engines[0], runs[0].retriever.shards[1]
        pids = actor_process.pid(engine), actor_process.pid(shard)
        refs = real_refs(self, questions, n_samples, greedy, seed)
        ray.kill(engine, no_restart=False)  # the engine dies while it plays the step's episodes...
        ray.kill(shard, no_restart=False)  # ...and so does a retriever shard it searches
        faults.extend([("engine", pids[0], actor_process.restarted(engine, pids[0])),
                       ("shard", pids[1], actor_process.restarted(shard, pids[1]))])
        return refs

    def score_then_kill(self, episodes):
        if len(faults) != 2:
            return real_score(self, episodes)
        pid = actor_process.pid(self.scorer)
        ref = real_score(self, episodes)
        ray.kill(self.scorer, no_restart=False)  # the scorer dies while it scores them (or right after)
        faults.append(("scorer", pid, actor_process.restarted(self.scorer, pid)))
        return ref

    monkeypatch.setattr(RolloutEnginePool, "rollout_refs", rollout_refs_then_kill)
    monkeypatch.setattr(TrainingRun, "score", score_then_kill)
    monkeypatch.setattr(TrainingRun, "__init__", init)
    cfg = load_config("default", untrained_run_overrides(out, **{"trainer.total_steps": 4, "trainer.resume": True}))
    history = train(cfg, quiet=True)
    assert f"resumed from {out / 'checkpoints' / 'step_000002'}" in capsys.readouterr().err
    assert [name for name, _, _ in faults] == ["engine", "shard", "scorer"]
    assert len(history) == 2  # steps 3 and 4: only the step after the checkpoint was lost
    rows = _metrics(out)
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    assert rows[:3] == killed_rows[:3]  # kept as the killed run wrote them
    for key, value in killed_rows[3].items():  # the lost step, redone through three actor deaths
        if not key.startswith(VOLATILE):
            assert rows[3][key] == pytest.approx(value, abs=1e-5), key
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("reward/mean")] == [1, 2, 3, 4]
    assert [e.step for e in events.Scalars("eval/em")] == [0, 2, 4]
    assert [s for s, _ in CheckpointDirs(out).complete()] == [2, 4]


def test_a_local_run_binds_the_dashboard_to_localhost(killed_run):
    """The dashboard the killed driver's own local Ray started listened on 127.0.0.1 only."""
    _, _, dashboard = killed_run
    assert dashboard is not None, "the dashboard never listened"
    cmdline, listening = dashboard
    assert "--host=127.0.0.1" in cmdline
    assert listening and set(listening) == {"127.0.0.1"}


def test_ensure_ray_starts_local_ray_with_a_loopback_dashboard(monkeypatch):
    """What kr1 asks of ray.init for a local run, checked without starting a second Ray here."""
    from kr1.cluster import ensure_ray
    from kr1.config import CONFIG_DIR, ClusterConfig

    calls = []
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    cluster = load_config("default").cluster
    ensure_ray(cluster.address, cluster.num_cpus, cluster.dashboard_host, include_dashboard=True)
    assert calls[0]["address"] == "local" and calls[0]["dashboard_host"] == "127.0.0.1"
    assert ClusterConfig().dashboard_host == "127.0.0.1"
    for path in CONFIG_DIR.glob("*.yaml"):
        assert load_config(str(path)).cluster.dashboard_host == "127.0.0.1", path.name


def test_a_real_checkpoint_lists_its_files(killed_run):
    out, _, _ = killed_run
    path = CheckpointDirs(out).path(2)
    files = json.loads((path / STATE_FILE).read_text())["files"]
    assert {"rng_driver.pt", "config.yaml", "policy/model.safetensors", "learner/.metadata"} <= set(files)
    assert damage(path, 2) is None
