"""Reliability: actors killed mid-work and a driver killed between checkpoints (bad input: test_bad_input.py).

Actor faults are `ray.kill(actor, no_restart=False)`: the actor restarts and its calls are
retried, and every test checks that the outcome equals a run without the kill. The driver
fault is SIGKILL of a whole `python -m kr1.driver` process group (it runs its own local Ray).
Bad inputs go through the entry points a user runs and must end in one `error:` line naming
the file, row or key, with nothing half-written. Hostile text is scripted model output fed
through the real rollout loop and the real retriever. Exposure of the cluster configs (no
port open to the internet) is checked in tests/test_cluster_configs.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import ray
import torch

from actors.retriever import RetrieverPool
from actors.reward import RewardScorer, start_scorer
from actors.rollout_engine import RolloutEnginePool
from kr1.checkpoint import STATE_FILE, CheckpointDirs, damage, write_trainer_state
from kr1.config import load_config
from kr1.generation import HFGenerator
from kr1.hits import merge_hits
from kr1.rollout import Episode, RolloutSettings, new_episodes, run_episodes

VOLATILE = ("time/", "throughput/")  # wall-clock figures; everything else must match after a fault


def _pid(actor) -> int:
    """The process behind an actor handle (waits for a restarting actor to come back)."""
    return ray.get(actor.__ray_call__.remote(lambda self: os.getpid()))


def _restarted(actor, pid: int, timeout_s: float = 120.0) -> int:
    """The actor's new pid once it has restarted (a kill lands asynchronously: calls made right
    after `ray.kill` may still reach the old process)."""
    deadline = time.monotonic() + timeout_s
    while (new := _pid(actor)) == pid:
        assert time.monotonic() < deadline, "the killed actor did not restart"
        time.sleep(0.1)
    return new


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def own_retriever(ray_session, index_factory):
    """Shards these tests may kill (the session's retriever_pool keeps its restart budget)."""
    pool = RetrieverPool(index_factory(2), top_k=3, num_cpus_per_shard=0.5)
    yield pool
    pool.close()


def _greedy(generator, questions, search) -> list[Episode]:
    episodes = new_episodes(questions, generator.tokenizer, 1, template="compact")
    return run_episodes(episodes, generator.generate, search, generator.tokenizer,
                        RolloutSettings(max_turns=3, temperature=0.0))


def _trace(episodes):
    return [(e.response_ids, e.loss_mask, e.actions, e.queries, e.retrieved_ids, e.answer) for e in episodes]


# --- 1. actor faults ----------------------------------------------------------------------------
def test_a_retriever_shard_killed_mid_search_changes_no_episode(generator, questions, own_retriever):
    calm = _greedy(generator, questions, own_retriever.search)
    killed = []  # (shard, its pid before the kill)

    def search_while_a_shard_dies(queries):
        shard = own_retriever.shards[len(killed) % 2]
        killed.append((shard, _pid(shard)))
        refs = own_retriever.search_refs(queries)  # the shards have the batch...
        ray.kill(shard, no_restart=False)  # ...and one of them dies
        return merge_hits(ray.get(refs), own_retriever.top_k)

    faulty = _greedy(generator, questions, search_while_a_shard_dies)
    assert killed, "the model never searched, so no shard was killed"
    assert _trace(faulty) == _trace(calm)
    for shard, pid in killed:
        _restarted(shard, pid)


def _perturbed_state(model_path: Path) -> tuple[dict[str, torch.Tensor], torch.nn.Module]:
    """Weights that are clearly not the model on disk (what a few training steps would make)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3 * p.std())
    return {k: v.clone() for k, v in model.state_dict().items()}, model


def test_a_killed_rollout_engine_restarts_with_the_latest_weights(tiny_model, questions, own_retriever, generator):
    cfg = load_config("default", ["rollout.max_total_tokens=768"])
    engines = RolloutEnginePool(cfg, str(tiny_model), own_retriever, num_cpus=0.5)
    try:
        initial = engines.rollout(questions, 1, greedy=True)
        state, model = _perturbed_state(tiny_model)
        engines.load_weights(ray.put(state))  # a weight sync: version 1, no longer the model on disk
        synced = engines.rollout(questions, 1, greedy=True)
        sequences = [e.prompt_ids + e.response_ids for e in synced[:3]]
        synced_logprobs = engines.sequence_logprobs(sequences)[0]
        first = _pid(engines.engines[0])

        ray.kill(engines.engines[0], no_restart=False)  # between steps: the next call meets a fresh engine
        second = _restarted(engines.engines[0], first)
        after_restart = engines.rollout(questions, 1, greedy=True)

        refs = engines.rollout_refs(questions, 1, greedy=True)
        ray.kill(engines.engines[0], no_restart=False)  # mid-rollout (it takes seconds): the call is retried
        mid_rollout = [e for part in ray.get(refs) for e in part]
        _restarted(engines.engines[0], second)
        restarted_logprobs = engines.sequence_logprobs(sequences)[0]
    finally:
        engines.close()
    assert _trace(synced) != _trace(initial), "the perturbation should change the greedy episodes"
    assert _trace(after_restart) == _trace(mid_rollout) == _trace(synced)
    local = HFGenerator(str(tiny_model), model=model, tokenizer=generator.tokenizer).sequence_logprobs(sequences)
    disk = generator.sequence_logprobs(sequences)
    for got, want, old in zip(restarted_logprobs, local, disk):
        np.testing.assert_allclose(got, want, atol=1e-4)
        assert np.abs(np.array(got) - np.array(old)).max() > 1e-2
    for got, want in zip(restarted_logprobs, synced_logprobs):
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_a_killed_reward_scorer_scores_the_same(ray_session):
    cfg = load_config("default", ["reward.f1_weight=1.0", "reward.format_weight=0.5"]).reward
    answers = ["Tavrin", "tavrin city", None, "Arlen Voss"] * 10_000  # a batch that takes a while to score
    episodes = [Episode(f"q{i % 4}", i, [1], actions=["search", "answer"], answer=a, finish="answer")
                for i, a in enumerate(answers)]
    golds = {"q0": ["Tavrin"], "q1": ["Tavrin"], "q2": ["x"], "q3": ["Arlen Voss", "A. Voss"]}
    expected = RewardScorer(cfg).score(episodes, golds)
    scorer = start_scorer(cfg)
    try:
        first = _pid(scorer)
        ref = scorer.score.remote(episodes, golds)
        ray.kill(scorer, no_restart=False)  # while it scores (or just before: either way the call survives)
        mid_call = ray.get(ref)
        second = _restarted(scorer, first)
        ray.kill(scorer, no_restart=False)
        between = ray.get(scorer.score.remote(episodes, golds))  # sent to a dying or restarting actor
        _restarted(scorer, second)
    finally:
        ray.kill(scorer)
    for got in (between, mid_call):
        np.testing.assert_array_equal(got.rewards, expected.rewards)
        np.testing.assert_array_equal(got.em, expected.em)


# --- 2. driver faults ---------------------------------------------------------------------------
def _overrides(world_dir, index, model, out, **extra):
    items = {"data.train_path": world_dir / "train.jsonl", "data.dev_path": world_dir / "dev.jsonl",
             "data.test_path": world_dir / "test.jsonl", "retriever.index_dir": index, "model.path": model,
             "retriever.num_cpus_per_shard": 0.5, "trainer.output_dir": out, "trainer.prompts_per_step": 3,
             "rollout.n_samples": 3, "trainer.eval_every": 2, "trainer.eval_prompts": 6,
             "trainer.checkpoint_every": 2, "trainer.total_steps": 4, "learner.lr": 1e-3,
             "algorithm.kl_coef": 0.01, "reward.format_weight": 0.5, "reward.f1_weight": 1.0, **extra}
    return [f"{k}={v}" for k, v in items.items()]


@pytest.fixture(scope="module")
def killed_run(ray_session, world_dir, index_factory, tiny_model, tmp_path_factory):
    """`python -m kr1.driver` (its own local Ray) SIGKILLed, whole process group, after the step-3
    row and before the step-4 checkpoint; what it left, its step-3 row and its dashboard's sockets."""
    out = tmp_path_factory.mktemp("killed") / "run"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # never join the test session's Ray
    log = open(out.parent / "driver.log", "w")
    driver = subprocess.Popen([sys.executable, "-m", "kr1.driver", *_overrides(world_dir, index_factory(2),
                                                                               tiny_model, out)],
                              cwd=Path(__file__).parent.parent, env=env, stdout=log, stderr=subprocess.STDOUT,
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


def test_a_driver_killed_between_checkpoints_resumes_with_each_step_once(killed_run, world_dir, index_factory,
                                                                        tiny_model, monkeypatch, capsys):
    """Resume after SIGKILL, and, during the redone step 3, kill the engine and a retriever shard
    mid-rollout and the reward scorer mid-score: step 3 still equals the killed run's step 3."""
    from kr1.driver import train
    from kr1.training_run import TrainingRun

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
        pids = _pid(engine), _pid(shard)
        refs = real_refs(self, questions, n_samples, greedy, seed)
        ray.kill(engine, no_restart=False)  # the engine dies while it plays the step's episodes...
        ray.kill(shard, no_restart=False)  # ...and so does a retriever shard it searches
        faults.extend([("engine", pids[0], _restarted(engine, pids[0])),
                       ("shard", pids[1], _restarted(shard, pids[1]))])
        return refs

    def score_then_kill(self, episodes):
        if len(faults) != 2:
            return real_score(self, episodes)
        pid = _pid(self.scorer)
        ref = real_score(self, episodes)
        ray.kill(self.scorer, no_restart=False)  # the scorer dies while it scores them (or right after)
        faults.append(("scorer", pid, _restarted(self.scorer, pid)))
        return ref

    monkeypatch.setattr(RolloutEnginePool, "rollout_refs", rollout_refs_then_kill)
    monkeypatch.setattr(TrainingRun, "score", score_then_kill)
    monkeypatch.setattr(TrainingRun, "__init__", init)
    history = train(load_config("default", _overrides(world_dir, index_factory(2), tiny_model, out,
                                                      **{"trainer.resume": True})), quiet=True)
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
    from kr1.config import CONFIG_DIR, ClusterConfig
    from kr1.ray_runtime import ensure_ray

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


def test_a_damaged_checkpoint_is_never_resumed_from(tmp_path):
    dirs = CheckpointDirs(tmp_path, keep=10)

    def write(step):
        with dirs.writing(step) as tmp:
            (tmp / "policy").mkdir()
            (tmp / "policy" / "model.safetensors").write_bytes(os.urandom(4096))
            (tmp / "rng_driver.pt").write_bytes(b"rng" * 100)
            write_trainer_state(tmp, {"step": step})
        return dirs.path(step)

    for step in (2, 4, 6, 8, 10, 12):
        write(step)
    (dirs.path(4) / STATE_FILE).unlink()  # killed before its state was written (copied by hand)
    state = (dirs.path(6) / STATE_FILE).read_text()
    (dirs.path(6) / STATE_FILE).write_text(state[:len(state) // 2])  # the state itself cut short
    with open(dirs.path(8) / "policy" / "model.safetensors", "r+b") as f:
        f.truncate(1000)  # a truncated weights file (full disk, interrupted copy)
    (dirs.path(10) / "rng_driver.pt").unlink()
    (dirs.path(12) / STATE_FILE).write_text(json.dumps({"step": 4}))  # someone else's state
    partial = dirs.root / ".step_000014.partial-dead"
    shutil.copytree(dirs.path(2), partial)
    reasons = {step: problem for step, _, problem in dirs.scan()}
    assert reasons[2] is None
    assert reasons[4] == f"no {STATE_FILE}"
    assert reasons[6].startswith(f"{STATE_FILE} is unreadable")
    assert reasons[8] == "policy/model.safetensors holds 1000 bytes, 4096 were written"
    assert reasons[10] == "rng_driver.pt is missing"
    assert reasons[12] == f"{STATE_FILE} is not the state of step 12"
    assert dirs.latest() == (2, dirs.path(2))
    assert dirs.remove_partial() == [partial] and not partial.exists()


def test_a_real_checkpoint_lists_its_files(killed_run):
    out, _, _ = killed_run
    path = CheckpointDirs(out).path(2)
    files = json.loads((path / STATE_FILE).read_text())["files"]
    assert {"rng_driver.pt", "config.yaml", "policy/model.safetensors", "learner/.metadata"} <= set(files)
    assert damage(path, 2) is None
