"""`ray job submit -- python -m kr1.driver` on clusters started with `ray start`: a static head with token auth
(stopped by `ray job stop`, then resumed), and heads that Ray's real autoscaler grows, v1 and v2."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from kr1.run.metrics import TIMING_PREFIXES

pytestmark = pytest.mark.cluster
STEPS = 3  # driver steps of every job here; the static run is stopped after its first checkpoint


# kr1's placement of 9 one-CPU bundles, reporting its wait every 0.2 s: one more node than the 8-CPU one there is
WATCH_A_LAUNCH = """
import ray
from kr1.config import load_config
from kr1.run.placement import Placement
ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
Placement(load_config("default", ["learner.num_workers=8"]), timeout_s=120, report_every_s=0.2).close()
"""


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def job_args(untrained_run_overrides):
    return lambda out, **extra: untrained_run_overrides(out, **{"trainer.total_steps": STEPS, "trainer.eval_every": 0,
                                                                "trainer.checkpoint_every": 1, **extra})


@pytest.fixture(scope="module")
def static_rows():
    """The metrics of the static cluster's run (stopped and resumed), for the autoscaled runs to equal."""
    return {}


def _submit_until_first_checkpoint(head, args: list[str], out: Path, submission_id: str, timeout_s: float) -> None:
    """Submit the driver job without waiting, and return once its step-1 checkpoint is written."""
    job = head.submit(args, wait=False, submission_id=submission_id)
    assert job.returncode == 0, job.stderr[-2000:]
    deadline = time.monotonic() + timeout_s
    while not (out / "checkpoints" / "step_000001").is_dir():
        assert time.monotonic() < deadline, head.job("logs", submission_id).stdout[-3000:]
        time.sleep(0.2)


def _same_metrics(left: list[dict], right: list[dict]) -> None:
    assert [r["step"] for r in left] == [r["step"] for r in right] == list(range(1, STEPS + 1))
    for a, b in zip(left, right):
        for key, value in a.items():
            if not key.startswith(TIMING_PREFIXES) and not key.startswith("throughput/"):
                assert b[key] == pytest.approx(value, abs=1e-5), (a["step"], key)


def test_job_stop_is_a_stop_and_the_resumed_job_finishes(start_head, job_args, tmp_path, static_rows):
    """On a static 8-CPU head with token auth: `ray job stop` after the first checkpoint stops the driver within the
    job's stop wait, with its one line and no native stack; nothing of the run is left; `trainer.resume=true` in a
    new job finishes it, each step logged once. A driver whose RAY_AUTH_MODE differs gets one line naming the fix."""
    head = start_head("static")
    # a driver whose RAY_AUTH_MODE differs spends ~20 s in Ray's own connection retries: it runs beside the job
    mismatch = subprocess.Popen([sys.executable, "-m", "kr1.driver", f"cluster.address={head.gcs}"],
                                env={**head.env, "RAY_AUTH_MODE": "disabled"}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    out = tmp_path / "run"
    _submit_until_first_checkpoint(head, job_args(out), out, "kr1-stopped", timeout_s=400)
    started = time.monotonic()
    stop = head.job("stop", "kr1-stopped")
    stop_s = time.monotonic() - started
    assert stop.returncode == 0, stop.stdout + stop.stderr
    status = head.job("status", "kr1-stopped")
    assert "was stopped" in status.stdout + status.stderr
    logs = head.job("logs", "kr1-stopped").stdout
    said = logs.strip().splitlines()[-1]
    assert said.startswith("stopped (SIGTERM):") and "trainer.resume=true" in said, logs[-2000:]
    assert "SIGTERM received" not in logs and "PC: @" not in logs, "a native stack: the driver was killed"
    print(f"\nray job stop: {stop_s:.1f} s")
    assert stop_s < 60, f"the stop took {stop_s:.0f} s: past the job's stop wait, the driver was killed"
    actors = subprocess.run([sys.executable, "-c", "import json, ray; ray.init(address='auto', logging_level='ERROR');"
                             "from ray.util.state import list_actors;"
                             "print(json.dumps([a.class_name for a in list_actors(filters=[('state', '=', 'ALIVE')])"
                             " if a.class_name != 'JobSupervisor']))"],
                            env={**head.env, "RAY_ADDRESS": head.gcs}, capture_output=True, text=True, timeout=120)
    alive = json.loads(actors.stdout.strip().splitlines()[-1])
    assert alive == [], f"actors left by the stopped job: {alive}"
    stopped_rows = _metrics(out)
    assert 1 <= len(stopped_rows) < STEPS, "stopped during the run, after its first step"

    resumed = head.submit(job_args(out, **{"trainer.resume": "true"}))
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"step {STEPS}/{STEPS}" in resumed.stdout
    static_rows["rows"] = _metrics(out)
    assert [r["step"] for r in static_rows["rows"]] == list(range(1, STEPS + 1)), "each step once"
    _, mismatch_err = mismatch.communicate(timeout=300)
    assert mismatch.returncode == 2
    assert "RAY_AUTH_MODE the same way" in mismatch_err.strip().splitlines()[-1]


@pytest.mark.parametrize("autoscaler", ["v1", "v2"])
def test_the_autoscaler_adds_the_node_the_run_waits_for(start_head, job_args, tmp_path, static_rows, autoscaler):
    """A head of 0 CPUs whose autoscaler may add two 8-CPU nodes: a run needing more than the head is refused at once
    when even the grown cluster cannot hold it; the default run is not refused, says what the cluster can grow to
    and that it waits, the node comes, and the run finishes with the static cluster's metrics."""
    head = start_head(autoscaler, worker_cpus=8, max_workers=2)
    started = time.monotonic()
    never = head.submit(job_args(tmp_path / "never", **{"learner.num_workers": 16}))
    refused_s = time.monotonic() - started
    assert never.returncode != 0
    error = [line for line in never.stdout.splitlines() if line.startswith("error: ")]
    assert error and error[-1].startswith("error: the run needs 18.1 CPUs") and "can grow to 16" in error[-1], \
        never.stdout[-3000:]
    assert f"the autoscaling config the head was started with: {head.config_file}" in error[-1]
    assert refused_s < 120, f"refused after {refused_s:.0f} s, not at once"
    assert "ray.worker.cpu" not in head.status(), "nothing was launched for a run that can never fit"

    out = tmp_path / "run"
    started = time.monotonic()
    job = head.submit(job_args(out))
    print(f"\n{autoscaler}: refused in {refused_s:.1f} s; the run's job took {time.monotonic() - started:.1f} s")
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    said = job.stdout
    assert (f"cluster: can grow to 16 CPUs, 0 GPUs (the autoscaling config the head was started with: "
            f"{head.config_file})") in said
    assert "waiting for the autoscaler to add nodes for this run's placement groups" in said
    assert re.search(r"placement groups ready after \d+ s", said)
    assert f"step {STEPS}/{STEPS}" in said
    assert re.search(r"1 ray\.worker\.cpu", head.status()), head.status()
    # what the wait reports say of the autoscaler while a node is coming: a second node, for another driver
    watch = subprocess.run([sys.executable, "-c", WATCH_A_LAUNCH], env={**head.env, "RAY_ADDRESS": head.gcs},
                           capture_output=True, text=True, timeout=300)
    waits = [line for line in watch.stderr.splitlines() if line.startswith("waiting for resources: ")]
    assert any(line.endswith("; the autoscaler is launching 1 x ray.worker.cpu)") for line in waits), \
        watch.stdout[-2000:] + watch.stderr[-2000:]
    assert re.search(r"^placement groups ready after \d+ s$", watch.stderr, flags=re.M), watch.stderr[-2000:]
    if "rows" in static_rows:
        _same_metrics(static_rows["rows"], _metrics(out))
    else:
        assert [r["step"] for r in _metrics(out)] == list(range(1, STEPS + 1))


def _node_processes(node_id: str) -> list[psutil.Process]:
    """Every process of one fake node: its raylet, agents and workers carry the node's id in their environment."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("RAY_OVERRIDE_NODE_ID_FOR_TESTING") == node_id:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def test_a_lost_node_is_replaced_and_the_run_finishes_with_the_undisturbed_metrics(start_head, job_args, tmp_path,
                                                                                   static_rows):
    """Under Ray's v1 autoscaler, the worker node that holds the whole run (learner ranks, the engine, the
    retriever shards, the reference, the scorer) is killed after the first checkpoint, every process at once, as a
    preempted VM is lost; the autoscaler replaces it, the run recovers by itself (actors restarted, learners and
    reference rebuilt from the last checkpoint) and finishes with the undisturbed run's metrics, each step once."""
    head = start_head("v1", worker_cpus=8, max_workers=2)
    out = tmp_path / "run"
    _submit_until_first_checkpoint(head, job_args(out), out, "kr1-node-lost", timeout_s=600)
    worker = "f" * 51 + "00001"  # the fake provider's first worker node
    victims = _node_processes(worker)
    assert any("raylet" in " ".join(p.cmdline()) for p in victims), "the worker node's raylet was not found"
    lost_at = time.monotonic()
    for proc in victims:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(victims, timeout=30)
    while True:
        status = head.job("status", "kr1-node-lost")
        said = (status.stdout + status.stderr).lower()
        if "job 'kr1-node-lost' succeeded" in said:
            break
        assert "failed" not in said and "was stopped" not in said, head.job("logs", "kr1-node-lost").stdout[-4000:]
        assert time.monotonic() < lost_at + 600, head.job("logs", "kr1-node-lost").stdout[-4000:]
        time.sleep(2)
    logs = head.job("logs", "kr1-node-lost").stdout
    print(f"\nnode lost: the run finished {time.monotonic() - lost_at:.0f} s after its node was killed")
    assert "worker died" in logs and "rebuilding from the last checkpoint" in logs, logs[-4000:]
    assert f"resumed from {out / 'checkpoints'}" in logs and f"step {STEPS}/{STEPS}" in logs, logs[-4000:]
    active = head.status().split("Pending:")[0]
    assert re.search(r"\d ray\.worker\.cpu", active), active  # the replacement
    rows = _metrics(out)
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1)), "each step once"
    if "rows" in static_rows:
        _same_metrics(static_rows["rows"], rows)
