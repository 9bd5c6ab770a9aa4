"""Reliability of the driver: SIGKILLed between checkpoints (its own local Ray and all), resumed with each
step logged once while three actors die inside the redone step; the dashboard it started listens on
127.0.0.1 only.

Actor faults of each role are in tests/actors/, bad input in tests/commands/test_bad_input.py, damaged
checkpoint directories in tests/training/test_checkpoint.py, and the cluster configs' exposure in
tests/test_cluster_configs.py.
"""

from __future__ import annotations

import contextlib
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
from kr1.run.metrics import TIMING_PREFIXES
from kr1.run.training_run import TrainingRun
from kr1.training.checkpoint import STATE_FILE, CheckpointDirs, damage

REPO = Path(__file__).resolve().parents[2]


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
    """(command line, addresses its web port listens on) of the dashboard in a process group, once that port
    listens (the dashboard's own gRPC port, which Ray binds to every address, is another port)."""
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmdline = proc.info["cmdline"] or []
            if os.getpgid(proc.pid) == group and any(a.endswith("dashboard/dashboard.py") for a in cmdline):
                port = int(next(a.split("=", 1)[1] for a in cmdline if a.startswith("--port=")))
                listening = [c.laddr.ip for c in proc.net_connections("inet")
                             if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
                return (cmdline, listening) if listening else None
        except (psutil.Error, ProcessLookupError, StopIteration):
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

    def rollout_refs_then_kill(self, questions, n_samples, greedy=False, seed=None, retriever=None):
        if greedy or faults:  # only the first training rollout after the resume: step 3
            return real_refs(self, questions, n_samples, greedy, seed, retriever)
        engine, shard = self.engines[0], runs[0].retriever.shards[1]
        pids = actor_process.pid(engine), actor_process.pid(shard)
        refs = real_refs(self, questions, n_samples, greedy, seed, retriever)
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
        if not key.startswith(TIMING_PREFIXES):
            assert rows[3][key] == pytest.approx(value, abs=1e-5), key
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("reward/mean")] == [1, 2, 3, 4]
    assert [e.step for e in events.Scalars("eval/em")] == [0, 2, 4]
    assert [s for s, _ in CheckpointDirs(out).complete()] == [2, 4]


def _exported_gauges(run: str, want: tuple[str, ...], step: float, timeout_s: float = 60.0) -> dict[str, float]:
    """kr1's series for `run` in this node's Prometheus export, once those in `want` are there at `step` (the
    driver's core worker reports its metrics every few seconds); phase shares keyed `name:phase`."""
    import re
    import urllib.request

    port = ray._private.worker.global_worker.node.metrics_export_port
    series: dict[str, float] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not (set(want) <= set(series) and series["ray_kr1_step"] == step):
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        for name, tags, value in re.findall(r"^(ray_kr1_\w+)\{([^}]*)\} (\S+)$", text, flags=re.M):
            if f'run="{run}"' in tags:
                phase = re.search(r'phase="(\w+)"', tags)
                series[f"{name}:{phase[1]}" if phase else name] = float(value)
        time.sleep(0.5)
    return series


def test_async_mode_at_staleness_0_is_the_sync_loop(killed_run, untrained_run_overrides, tmp_path):
    """The killed sync run's first steps against the same config with trainer.mode=async and
    algorithm.max_staleness=0: every metric of rows 0-2 equal (the start-of-run eval and two steps). During that
    run its headline figures are read from Ray's metrics export."""
    from kr1.run.loop import one_step
    from kr1.run.run_logger import PhaseTimer

    _, killed_rows, _ = killed_run
    out = tmp_path / "async0"
    cfg = load_config("default", untrained_run_overrides(out, **{"trainer.total_steps": 4, "trainer.mode": "async",
                                                                  "algorithm.max_staleness": 0}))
    run, timer = TrainingRun(cfg, quiet=True), PhaseTimer()
    try:
        run.evaluate_start()
        rows = [one_step(run, step, timer)[0] for step in range(2)]
        exported = _exported_gauges("async0", want=("ray_kr1_reward", "ray_kr1_step", "ray_kr1_dev_em"),
                                    step=2.0)
    finally:
        run.close()
    # during the run, the node's metrics export (what Prometheus scrapes) holds kr1's gauges at this run's values
    assert exported["ray_kr1_reward"] == pytest.approx(rows[-1]["reward/mean"], rel=1e-6)
    assert exported["ray_kr1_step"] == 2.0 and exported["ray_kr1_dev_em"] == pytest.approx(rows[-1]["eval/em"])
    assert exported["ray_kr1_kl"] == pytest.approx(rows[-1]["train/kl"], rel=1e-6)
    assert exported["ray_kr1_step_seconds"] == pytest.approx(rows[-1]["time/step"], rel=1e-6)
    shares = {k.split(":")[1]: v for k, v in exported.items() if k.startswith("ray_kr1_phase_share:")}
    assert {"rollout", "update"} <= set(shares) and 0 < sum(shares.values()) <= 1.0 + 1e-6
    assert all(r["async/staleness_mean"] == 0 and r["async/queue_depth"] == 0 for r in rows)
    assert not any(k.startswith("train/behaviour") for r in rows for k in r), "on-policy: no importance weights"
    async_rows = _metrics(out)
    assert [r["step"] for r in async_rows] == [0, 1, 2]
    for left, right in zip(killed_rows[:3], async_rows):
        for key, value in left.items():
            if not key.startswith(TIMING_PREFIXES):
                assert right[key] == pytest.approx(value, abs=1e-5), (left["step"], key)


def test_a_local_run_binds_the_dashboard_to_localhost(killed_run):
    """The dashboard the killed driver's own local Ray started served its pages on 127.0.0.1 only."""
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
    assert {"config.yaml", "policy/model.safetensors", "learner/.metadata"} <= set(files)
    assert damage(path, 2) is None


# --- disks that fill or refuse ------------------------------------------------------------------
@contextlib.contextmanager
def _small_disk(path: Path, size_mb: int, read_only: bool = False):
    """A `size_mb` tmpfs at `path` (root); for other users a read-only disk is a directory they cannot write."""
    path.mkdir(parents=True)
    if os.geteuid() != 0:
        if not read_only:
            pytest.skip("a disk that fills needs a tmpfs mount, which needs root")
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m" + (",ro" if read_only else ""),
                              "tmpfs", str(path)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def test_a_disk_that_fills_ends_the_run_in_one_line_and_keeps_the_last_checkpoint(ray_session, untrained_run_overrides,
                                                                                  tmp_path, one_line_error):
    from kr1.driver import main

    # one checkpoint of the tiny model takes ~13 MB: the step-1 one fits, the step-2 one does not
    with _small_disk(tmp_path / "disk", 20) as disk:
        out = disk / "run"
        overrides = untrained_run_overrides(out, **{"trainer.total_steps": 3, "trainer.checkpoint_every": 1,
                                                    "trainer.eval_every": 0})
        line = one_line_error(lambda: main(overrides))
        assert line == (f"error: cannot write the step-2 checkpoint in {out / 'checkpoints'}: [Errno 28] No space "
                        "left on device; the last complete one (step_000001) is untouched"), line
        dirs = CheckpointDirs(out)
        assert dirs.latest() == (1, dirs.path(1)) and damage(dirs.path(1), 1) is None
        assert sorted(p.name for p in dirs.root.iterdir()) == ["step_000001"], "a partial checkpoint was left"
        assert [r["step"] for r in _metrics(out)] == [1, 2]


def test_a_read_only_output_directory_stops_before_anything_starts(ray_session, untrained_run_overrides, tmp_path,
                                                                  one_line_error):
    from kr1.driver import main

    with _small_disk(tmp_path / "disk", 1, read_only=True) as disk:
        line = one_line_error(lambda: main(untrained_run_overrides(disk / "run")))
    assert line.startswith(f"error: cannot write the run's lock file in {disk / 'run'}: [Errno "), line
    assert "Read-only file system" in line or "Permission denied" in line, line


def test_metrics_on_a_full_disk_end_in_one_line(tmp_path):
    from kr1.errors import WriteError
    from kr1.run.run_logger import RunLogger

    with _small_disk(tmp_path / "disk", 1) as disk:
        logger = RunLogger(disk, total_steps=2, quiet=True)
        with pytest.raises(OSError):  # fill the disk to the last byte
            with open(disk / "filler", "wb") as f:
                f.write(b"\0" * (2 << 20))
        with pytest.raises(WriteError, match=rf"cannot write the step-1 metrics and TensorBoard events in {disk}: "
                                             r"\[Errno 28\] No space left on device"):
            for _ in range(200):  # buffered writers may take a few rows to reach the disk
                logger.log(1, {"reward/mean": 0.5, **{f"x/{i}": float(i) for i in range(50)}})
        logger.close()


# --- a learner or reference worker that dies ----------------------------------------------------
def test_a_death_past_max_recoveries_ends_the_run(ray_session, untrained_run_overrides, tmp_path, monkeypatch,
                                                  capsys):
    """Before any checkpoint the rebuilt learners start from the model on disk; the second death is one too many."""
    from actors.learner import LearnerGroup

    real_update = LearnerGroup.update

    def update_then_kill(self, batch, step):
        ray.kill(self.workers[0])
        return real_update(self, batch, step)

    monkeypatch.setattr(LearnerGroup, "update", update_then_kill)
    cfg = load_config("default", untrained_run_overrides(tmp_path / "run", **{
        "trainer.max_recoveries": 1, "trainer.eval_every": 0, "learner.num_workers": 1}))
    with pytest.raises(ray.exceptions.RayError):
        train(cfg, quiet=True)
    said = capsys.readouterr().err
    assert said.count("a learner worker died") == 1 and "recovery 1 of trainer.max_recoveries=1" in said, said

