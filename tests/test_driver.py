"""The driver end to end: a few real steps, TensorBoard events, checkpoints, exact resume, ray job submit."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kr1.config import load_config
from kr1.driver import train

# wall-clock figures differ between runs by nature; everything else must match on resume
VOLATILE = ("time/", "throughput/")


def _overrides(world_dir, index, model, out, **extra):
    items = {"data.train_path": world_dir / "train.jsonl", "data.dev_path": world_dir / "dev.jsonl",
             "data.test_path": world_dir / "test.jsonl", "retriever.index_dir": index, "model.path": model,
             "retriever.num_cpus_per_shard": 0.5, "trainer.output_dir": out, "trainer.prompts_per_step": 3,
             "rollout.n_samples": 3, "trainer.eval_every": 2, "trainer.eval_prompts": 6,
             "trainer.checkpoint_every": 2, "learner.lr": 1e-3, "algorithm.kl_coef": 0.01,
             "reward.format_weight": 0.5, "reward.f1_weight": 1.0, **extra}
    return [f"{k}={v}" for k, v in items.items()]


@pytest.fixture(scope="module")
def paths(world_dir, index_factory, tiny_model):
    return world_dir, index_factory(2), tiny_model


def _metrics(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def test_three_steps_write_events_checkpoint_and_a_loadable_policy(ray_session, paths, tmp_path):
    out = tmp_path / "run"
    history = train(load_config("default", _overrides(*paths, out, **{"trainer.total_steps": 3})), quiet=True)
    assert len(history) == 3
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    for name in ("reward/mean", "reward/std", "rollout/em", "rollout/f1", "rollout/response_tokens",
                 "rollout/response_tokens_max", "rollout/turns", "rollout/searches", "rollout/invalid_rate",
                 "train/kl", "train/entropy", "train/clip_fraction", "train/grad_norm", "train/lr",
                 "time/rollout", "time/update", "time/sync_weights", "throughput/rollout_tokens_per_s", "eval/em"):
        assert name in scalars, name
    assert [e.step for e in events.Scalars("reward/mean")] == [1, 2, 3]
    checkpoints = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert checkpoints == ["step_000002", "step_000003"]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    policy = out / "checkpoints" / "step_000003" / "policy"
    AutoModelForCausalLM.from_pretrained(policy)
    AutoTokenizer.from_pretrained(policy)
    state = json.loads((out / "checkpoints" / "step_000003" / "trainer_state.json").read_text())
    assert state["step"] == 3 and state["data_position"] == 9
    if importlib.util.find_spec("vllm"):  # the checkpoint policy also serves from vLLM
        from actors.rollout_engine import RolloutEnginePool
        from actors.retriever import RetrieverPool
        from kr1.data import load_questions

        world_dir, index, _ = paths
        cfg = load_config("default", ["rollout.backend=vllm", "rollout.max_total_tokens=768"])
        retriever = RetrieverPool(index, num_cpus_per_shard=0.5)
        engines = RolloutEnginePool(cfg, str(policy), retriever, num_cpus=0.5)
        try:
            episodes = engines.rollout(load_questions(world_dir / "dev.jsonl")[:2], 1, greedy=True)
        finally:
            engines.close()
            retriever.close()
        assert all(e.turns >= 1 for e in episodes)


def test_resume_equals_an_uninterrupted_run(ray_session, paths, tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    train(load_config("default", _overrides(*paths, whole, **{"trainer.total_steps": 4})), quiet=True)
    train(load_config("default", _overrides(*paths, split, **{"trainer.total_steps": 2})), quiet=True)
    train(load_config("default", _overrides(*paths, split, **{"trainer.total_steps": 4, "trainer.resume": True})),
          quiet=True)
    a, b = _metrics(whole), _metrics(split)
    assert [r["step"] for r in b] == [r["step"] for r in a] == [0, 1, 2, 3, 4]  # step 0: the start-of-run eval
    for left, right in zip(a, b):
        for key, value in left.items():
            if not key.startswith(VOLATILE):
                assert right[key] == pytest.approx(value, abs=1e-5), (left["step"], key)


def test_resume_never_picks_a_partial_checkpoint(ray_session, paths, tmp_path):
    from kr1.checkpoint import CheckpointDirs

    out = tmp_path / "run"
    train(load_config("default", _overrides(*paths, out, **{"trainer.total_steps": 2})), quiet=True)
    dirs = CheckpointDirs(out)
    # what a kill during the next write leaves behind: a partial directory, never step_000004
    partial = dirs.root / ".step_000004.partial-dead"
    shutil.copytree(dirs.path(2), partial)
    (partial / "trainer_state.json").unlink()
    assert dirs.latest() == (2, dirs.path(2))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_job_submit_end_to_end(paths, tmp_path):
    """`ray start` + `ray job submit` with token auth on both sides, as the README says; a driver whose
    RAY_AUTH_MODE differs from the cluster's gets a one-line message naming the fix."""
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    ray_bin = str(Path(sys.executable).parent / "ray")
    subprocess.run([ray_bin, "get-auth-token", "--generate"], env=env, capture_output=True, timeout=60)
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
        out = tmp_path / "job_run"
        cmd = [ray_bin, "job", "submit", f"--address=http://127.0.0.1:{dash}", "--working-dir",
               str(Path(__file__).parent.parent), "--", sys.executable, "-m", "kr1.driver",
               *_overrides(*paths, out, **{"trainer.total_steps": 2, "trainer.eval_every": 0})]
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
        mismatch = subprocess.run([sys.executable, "-m", "kr1.driver", f"cluster.address=127.0.0.1:{port}"],
                                  env={**env, "RAY_AUTH_MODE": "disabled"}, capture_output=True, text=True,
                                  timeout=300)
        assert mismatch.returncode == 2
        assert "RAY_AUTH_MODE the same way" in mismatch.stderr.strip().splitlines()[-1]
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
