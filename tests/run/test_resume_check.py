"""What a resume may change: the checkpoint's config and input files against this run's, on made-up checkpoints."""

from __future__ import annotations

import json

import pytest

from kr1.config import load_config, to_yaml
from kr1.run.resume_check import INPUTS_FILE, ResumeMismatchError, check_resume, config_changes, flat

INPUTS = {"model": "aaaa", "index": "bbbb", "train questions": "cccc"}


def _checkpoint(tmp_path, overrides=(), inputs=INPUTS):
    path = tmp_path / "step_000002"
    path.mkdir()
    (path / "config.yaml").write_text(to_yaml(load_config("default", list(overrides))))
    (path / INPUTS_FILE).write_text(json.dumps(inputs))
    return path


def test_legs_may_change_length_cadence_and_cluster_sizes(tmp_path):
    ckpt = _checkpoint(tmp_path)
    cfg = load_config("default", ["trainer.total_steps=500", "trainer.eval_every=5", "learner.num_workers=4",
                                  "cluster.num_cpus=16", "rollout.backend=vllm", "retriever.num_shards=4"])
    notes = check_resume(cfg, ckpt, INPUTS)
    assert len(notes) == 1 and "changed between legs:" in notes[0]
    for change in ("trainer.total_steps 100 -> 500", "learner.num_workers 2 -> 4", "cluster.num_cpus None -> 16",
                   "rollout.backend 'hf' -> 'vllm'", "retriever.num_shards 2 -> 4"):
        assert change in notes[0], change
    assert check_resume(load_config("default"), ckpt, INPUTS) == []


@pytest.mark.parametrize("override, named", [
    ("learner.lr=0.01", "learner.lr 0.0003 -> 0.01"), ("rollout.n_samples=4", "rollout.n_samples 8 -> 4"),
    ("model.path=/elsewhere", "model.path None -> '/elsewhere'"), ("reward.weights.f1=1.0", "reward.weights {'em': 1.0, 'answered_evidence': 0.5} -> {"),
    ("algorithm.advantage=reinforce_pp", "algorithm.advantage 'grpo' -> 'reinforce_pp'"),
    ("data.synthetic_seed=3", "data.synthetic_seed 0 -> 3"), ("retriever.top_k=5", "retriever.top_k 3 -> 5"),
])
def test_what_is_trained_may_not_change(tmp_path, override, named):
    ckpt = _checkpoint(tmp_path)
    with pytest.raises(ResumeMismatchError) as refused:
        check_resume(load_config("default", [override]), ckpt, INPUTS)
    message = str(refused.value)
    assert named in message and "\n" not in message and str(ckpt) in message
    assert "trainer.resume_allow_changes=true" in message
    notes = check_resume(load_config("default", [override, "trainer.resume_allow_changes=true"]), ckpt, INPUTS)
    assert any("resuming although" in n and named in n for n in notes)


def test_other_files_under_the_same_paths_are_caught(tmp_path):
    ckpt = _checkpoint(tmp_path)
    with pytest.raises(ResumeMismatchError, match="other model and index files than it was trained on"):
        check_resume(load_config("default"), ckpt, {**INPUTS, "model": "dddd", "index": "eeee"})


def test_a_checkpoint_from_before_fingerprints_still_resumes(tmp_path):
    ckpt = _checkpoint(tmp_path)
    (ckpt / INPUTS_FILE).unlink()
    assert check_resume(load_config("default"), ckpt, INPUTS) == []


def test_keys_only_one_side_knows_are_not_changes():
    training, legs = config_changes(flat({"a": {"b": 1, "old": 2}}), flat({"a": {"b": 1, "new": 3}}))
    assert training == legs == {}
