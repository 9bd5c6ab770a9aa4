"""The training run end to end: TensorBoard events, checkpoints, a loadable policy, exact resume, and every
actor named by role and index."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from kr1.config import load_config
from kr1.run.loop import train
from kr1.run.metrics import TIMING_PREFIXES
from kr1.training.checkpoint import CheckpointDirs

pytestmark = pytest.mark.numerics  # resumed and uninterrupted runs compared


def _metrics(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def test_three_steps_write_events_checkpoints_and_a_loadable_policy(trained_run):
    out, history = trained_run.out, trained_run.history
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
    # each weighted reward logged apart, the tests' own by import path among them, and summed as weighted
    weights = {"em": 1.0, "answered_evidence": 0.5, "format": 0.5, "f1": 1.0, "evidence": 0.5,
               "reward_plugins:searched_twice": 0.25}
    steps = [row for row in _metrics(out) if "reward/mean" in row]
    assert len(steps) == 3
    for row in steps:
        assert row["reward/mean"] == pytest.approx(sum(w * row[f"reward/{n}"] for n, w in weights.items()), abs=1e-5)
    # the probe: the same training questions, greedy, before the first step, every second and after the last
    assert [e.step for e in events.Scalars("probe/em")] == [0, 2, 3]
    assert [e.value for e in events.Scalars("probe/n")] == [4.0, 4.0, 4.0]
    for name in ("closed_book/em", "eval/evidence_recall"):
        assert name in scalars, name  # the closed-book column
    # a curve per question type the step sampled (dynamic sampling's extra prompts differ by kernel path)
    assert any(n.startswith("rollout/searches_") for n in scalars) and any(n.startswith("eval/em_") for n in scalars)
    checkpoints = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert checkpoints == ["step_000002", "step_000003"]
    policy = out / "checkpoints" / "step_000003" / "policy"
    AutoModelForCausalLM.from_pretrained(policy)  # vLLM serves it too: tests/actors/test_rollout_engine_actor.py
    AutoTokenizer.from_pretrained(policy)
    state = json.loads((out / "checkpoints" / "step_000003" / "trainer_state.json").read_text())
    run_id = json.loads((out / "run.json").read_text())["run_id"]
    assert state["step"] == 3 and state["run_id"] == run_id and len(run_id) == 12


def test_resume_equals_an_uninterrupted_run(trained_run, trained_run_overrides, tmp_path, capsys):
    whole = trained_run.out
    split = tmp_path / "split"
    train(load_config("default", trained_run_overrides(split, **{"trainer.total_steps": 2})), quiet=True)
    capsys.readouterr()
    # a leg may change its length and cadence: said, not refused
    resumed = trained_run_overrides(split, **{"trainer.resume": True, "trainer.checkpoint_every": 1})
    train(load_config("default", resumed), quiet=True)
    said = capsys.readouterr().err
    figure = (split / "curves.png").read_bytes()  # each leg draws the run's curves again, all steps so far
    assert figure.startswith(b"\x89PNG") and len(figure) > 20_000  # six panels drawn, not an empty canvas
    assert "changed between legs: trainer.checkpoint_every 2 -> 1, trainer.total_steps 2 -> 3" in said, said
    a, b = _metrics(whole), _metrics(split)
    assert [r["step"] for r in b] == [r["step"] for r in a] == [0, 1, 2, 3]  # step 0: the start-of-run eval
    for left, right in zip(a, b):
        for key, value in left.items():
            if not key.startswith(TIMING_PREFIXES):
                assert right[key] == pytest.approx(value, abs=1e-5), (left["step"], key)


def test_resume_never_picks_a_partial_checkpoint(trained_run, tmp_path):
    out = trained_run.out
    shutil.copytree(out / "checkpoints", tmp_path / "checkpoints")
    dirs = CheckpointDirs(tmp_path)
    # what a kill during the next write leaves behind: a partial directory, never step_000005
    partial = dirs.root / ".step_000005.partial-dead"
    shutil.copytree(dirs.path(3), partial)
    (partial / "trainer_state.json").unlink()
    assert dirs.latest() == (3, dirs.path(3))


def test_every_actor_shows_its_role_and_index_in_the_dashboard(trained_run):
    for role, names in trained_run.actor_names.items():
        assert [n.rsplit("-", 1)[0] for n in names] == [f"{role}{i}" for i in range(len(names))], role
        assert set(names) <= trained_run.alive, role
    assert len(trained_run.actor_names["learner-rank"]) == len(trained_run.actor_names["reference-worker"]) == 2
    assert any(n.startswith("reward-scorer0-") for n in trained_run.alive)


def test_a_collapse_stops_the_run_with_a_checkpoint_and_one_line(ray_session, untrained_run_overrides, tmp_path,
                                                                 capsys):
    out = tmp_path / "run"
    # searches per episode can never reach 100: the monitor crosses at the first step
    cfg = load_config("default", untrained_run_overrides(out, **{
        "trainer.total_steps": 3, "trainer.checkpoint_every": 0, "trainer.eval_every": 0,
        "trainer.stop_on_collapse": True, "monitor.searches_min": 100, "algorithm.dynamic_sampling": True,
        "algorithm.max_sampling_rounds": 2, "reward.weights.f1": 1.0}))
    history = train(cfg, quiet=True)
    said = capsys.readouterr().err
    assert len(history) == 1
    lines = [line for line in said.splitlines() if "searches vanish" in line]
    assert lines[0].startswith("warning: step 1: searches vanish: rollout/searches ")
    assert lines[1].startswith("stopped after step 1 (trainer.stop_on_collapse): warning: step 1: searches vanish")
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_000001"]
    logged = history[0]
    assert {"rollout/informative_groups", "rollout/sampling_rounds", "rollout/repeated_query_rate",
            "rollout/empty_query_rate", "rollout/evidence_recall", "train/entropy", "train/kl"} <= set(logged)
    assert 1 <= logged["rollout/sampling_rounds"] <= 2

