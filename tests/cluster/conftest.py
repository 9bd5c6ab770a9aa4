"""Ray clusters of their own, started with `ray start` as users start them: a static head, and heads whose real
Ray autoscaler (v1, and v2) drives Ray's fake multi-node provider, every "node" a real raylet on this machine.

They stop with `ray stop` on the whole machine, so they run in their own pytest invocation (`.ci/run`, after the
main suite: `python -m pytest -m cluster tests/cluster`), and each checks that no Ray process is left.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")
FAKE_HEAD_NODE_ID = "f" * 51 + "00000"  # the fake provider's head (ray.autoscaler._private.fake_multi_node)
# what is left of a Ray cluster when one is
RAY_PROCESSES = ("raylet", "gcs_server", "ray/dashboard/", "ray/autoscaler/", "log_monitor.py", "default_worker.py",
                 "runtime_env/agent", "ray::")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_processes() -> list[str]:
    found = []
    for proc in psutil.process_iter(["cmdline", "name", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:  # exited, waiting for a parent that is not ours to reap it
            continue
        text = " ".join(proc.info["cmdline"] or []) or (proc.info["name"] or "")
        if any(marker in text for marker in RAY_PROCESSES):
            found.append(text[:160])
    return found


def stop_all_ray() -> None:
    subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=120)
    deadline = time.monotonic() + 30
    while ray_processes() and time.monotonic() < deadline:
        time.sleep(0.5)


def autoscaling_config(port: int, worker_cpus: int, max_workers: int, v2: bool) -> dict:
    """A head of 0 CPUs and one worker type of `worker_cpus` CPUs, at most `max_workers` of them."""
    provider = {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                "disable_launch_config_check": True, "gcs_address": f"127.0.0.1:{port}"}
    if v2:  # the v2 autoscaler fills in a provider's defaults from a file the wheel lacks for fake_multinode
        # (fake_multi_node/example.yaml); as an external provider the same class needs none
        provider.update(type="external", launch_multiple=True, head_node_id=FAKE_HEAD_NODE_ID,
                        module="ray.autoscaler._private.fake_multi_node.node_provider.FakeMultiNodeProvider")
    return {"cluster_name": "kr1-fake", "max_workers": max_workers, "idle_timeout_minutes": 5, "upscaling_speed": 1.0,
            "provider": provider, "head_node_type": "ray.head.default",
            "available_node_types": {"ray.head.default": {"resources": {"CPU": 0}, "max_workers": 0, "node_config": {}},
                                     "ray.worker.cpu": {"resources": {"CPU": worker_cpus}, "min_workers": 0,
                                                        "max_workers": max_workers, "node_config": {}}},
            "auth": {"ssh_user": "ray"}, "file_mounts": {}, "cluster_synced_files": [],
            "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
            "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
            "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": []}


@dataclass
class RayHead:
    """A running head: where its jobs go, the environment its commands need, its autoscaling config if any."""

    dashboard: str
    gcs: str
    env: dict[str, str]
    config_file: Path | None

    def submit(self, args: list[str], *, wait: bool = True, submission_id: str | None = None,
               timeout: float = 600) -> subprocess.CompletedProcess:
        """`ray job submit` of `python -m kr1.driver args`, with the stop wait the README gives."""
        cmd = [RAY, "job", "submit", f"--address={self.dashboard}", "--working-dir", str(REPO),
               "--runtime-env-json", json.dumps({"env_vars": {"RAY_JOB_STOP_WAIT_TIME_S": "60"}}),
               *([f"--submission-id={submission_id}"] if submission_id else []), *([] if wait else ["--no-wait"]),
               "--", sys.executable, "-m", "kr1.driver", *args]
        for _ in range(60):  # the head's job agent takes a few seconds to come up
            job = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
            if not re.search(r"No available agent|Failed to connect|Connection refused", job.stderr):
                return job
            time.sleep(2)
        return job

    def job(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([RAY, "job", *args, f"--address={self.dashboard}"], env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def status(self) -> str:
        return subprocess.run([RAY, "status", f"--address={self.gcs}"], env=self.env, capture_output=True,
                              text=True, timeout=60).stdout


@pytest.fixture
def start_head(tmp_path) -> Iterator:
    """Start a head: `start_head("static")` (8 CPUs), or `start_head("v1" | "v2", worker_cpus, max_workers)` under
    that autoscaler. Stopped with `ray stop` afterwards; the test fails if a Ray process is left."""
    started = []

    def start(kind: str, worker_cpus: int = 8, max_workers: int = 1) -> RayHead:
        import ray

        ray.shutdown()  # the local Ray that built the session's fixtures: `ray stop` would leave this process dying
        stop_all_ray()
        # token auth on, the token in the environment only: the user's ~/.ray stays as it was
        env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        for key in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH"):
            env.pop(key, None)
        port, dash = _free_port(), _free_port()
        cmd = [RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", f"--dashboard-port={dash}",
               "--dashboard-host=127.0.0.1", "--disable-usage-stats"]
        config_file = None
        if kind == "static":
            cmd.append("--num-cpus=8")
        else:
            config_file = tmp_path / f"autoscaling_{kind}.yaml"
            config_file.write_text(yaml.safe_dump(autoscaling_config(port, worker_cpus, max_workers, kind == "v2")))
            cmd += ["--num-cpus=0", f"--autoscaling-config={config_file}"]
            env.update(RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1")
            if kind == "v2":  # Ray's own recipe for the v2 autoscaler on the fake provider (ray.cluster_utils)
                env.update(RAY_enable_autoscaler_v2="1", RAY_CLOUD_INSTANCE_ID=FAKE_HEAD_NODE_ID,
                           RAY_OVERRIDE_NODE_ID_FOR_TESTING=FAKE_HEAD_NODE_ID)
        started.append(True)
        subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180, check=True)
        for key in ("RAY_FAKE_CLUSTER", "RAY_CLOUD_INSTANCE_ID", "RAY_OVERRIDE_NODE_ID_FOR_TESTING"):
            env.pop(key, None)  # the head's own; jobs and CLI calls run without them
        return RayHead(f"http://127.0.0.1:{dash}", f"127.0.0.1:{port}", env, config_file)

    yield start
    if started:
        stop_all_ray()
        assert not ray_processes(), f"Ray processes left after `ray stop`: {ray_processes()}"
