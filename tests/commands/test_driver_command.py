"""`python -m kr1.driver` as users start it on a cluster: `ray start` + `ray job submit` with token auth."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]


def _metrics(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_ray_job_submit_end_to_end(untrained_run_overrides, tmp_path):
    """`ray start` + `ray job submit` with token auth on both sides, as the README says; a driver whose
    RAY_AUTH_MODE differs from the cluster's gets a one-line message naming the fix."""
    # the token travels in the environment: `ray get-auth-token --generate` would write ~/.ray/auth_token, and
    # every local Ray the user starts afterwards would turn token authentication on
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    ray_bin = str(Path(sys.executable).parent / "ray")
    port, dash = _free_port(), _free_port()
    # every port of its own: the session's Ray instance already holds the defaults
    ports = [f"--{name}={_free_port()}" for name in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                       "metrics-export-port", "runtime-env-agent-port",
                                                       "ray-client-server-port", "node-manager-port",
                                                       "object-manager-port")]
    # --block keeps the head in this process group, so it can be stopped without `ray stop`,
    # which would also take down the test session's own Ray instance
    head = subprocess.Popen([ray_bin, "start", "--head", "--block", f"--port={port}", "--dashboard-host=127.0.0.1",
                             f"--dashboard-port={dash}", "--num-cpus=8", "--disable-usage-stats", *ports],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not _listening(port):  # the head's GCS
            assert time.monotonic() < deadline, "the head never listened"
            time.sleep(0.5)
        # a driver whose RAY_AUTH_MODE differs spends ~20 s in Ray's own connection retries: it runs beside the job
        mismatch = subprocess.Popen([sys.executable, "-m", "kr1.driver", f"cluster.address=127.0.0.1:{port}"],
                                    env={**env, "RAY_AUTH_MODE": "disabled"}, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
        out = tmp_path / "job_run"
        cmd = [ray_bin, "job", "submit", f"--address=http://127.0.0.1:{dash}", "--working-dir",
               str(REPO), "--", sys.executable, "-m", "kr1.driver",
               *untrained_run_overrides(out, **{"trainer.total_steps": 2, "trainer.eval_every": 0})]
        for _ in range(60):  # the head and its job agent take a few seconds to come up
            job = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
            if "No available agent" not in job.stderr and "Failed to connect" not in job.stderr \
                    and "Connection refused" not in job.stderr:
                break
            time.sleep(2)
        assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
        assert "succeeded" in job.stdout.lower() + job.stderr.lower()
        assert "step 2/2" in job.stdout
        assert len(_metrics(out)) == 2
        _, mismatch_err = mismatch.communicate(timeout=300)
        assert mismatch.returncode == 2
        assert "RAY_AUTH_MODE the same way" in mismatch_err.strip().splitlines()[-1]
    finally:
        # a throwaway cluster: a graceful stop takes half a minute, so it gets 5 s and then SIGKILL
        family = psutil.Process(head.pid).children(recursive=True)
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=30)
        for proc in psutil.wait_procs(family, timeout=5)[1]:  # any that left the group
            proc.kill()
