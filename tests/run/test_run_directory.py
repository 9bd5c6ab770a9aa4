"""One run per output directory, in time as well as in space: a fresh run never mixes with an earlier one, and
pruning deletes only this run's own checkpoints."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from kr1.config import load_config
from kr1.run.loop import train
from kr1.run.run_state import EarlierRunError
from kr1.run.training_run import TrainingRun
from kr1.training.checkpoint import CheckpointDirs, read_trainer_state, write_trainer_state


def _listing(root: Path) -> dict[str, int]:
    """Every file under root with its size (what a refused run must leave as it was)."""
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".kr1.lock"}


def test_a_fresh_run_in_a_used_directory_is_refused_and_overwrite_moves_the_earlier_run_aside(
        trained_run, untrained_run_overrides, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(trained_run.out, out)  # an earlier run: checkpoints of steps 2 and 3, metrics of 0-3
    before = _listing(out)
    settings = {"trainer.total_steps": 2, "trainer.checkpoint_every": 1, "trainer.keep_checkpoints": 1,
                "trainer.eval_every": 0}
    with pytest.raises(EarlierRunError) as refused:
        TrainingRun(load_config("default", untrained_run_overrides(out, **settings)), quiet=True)
    said = str(refused.value)
    assert "\n" not in said and f"trainer.output_dir {out} holds an earlier run" in said
    assert "2 checkpoint(s), last step_000003" in said and "metrics.jsonl with 4 step(s)" in said
    assert "trainer.resume=true" in said and "new trainer.output_dir" in said
    assert _listing(out) == before  # nothing written, nothing lost

    history = train(load_config("default", untrained_run_overrides(out, **settings, **{"trainer.overwrite": True})),
                    quiet=True)
    assert len(history) == 2
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.previous-")]
    assert len(aside) == 1 and f"moved the earlier run in {out}" in capsys.readouterr().err
    assert _listing(aside[0]) == before  # the earlier run, whole, beside the new one
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    # steps 1 and 2 were written; trainer.keep_checkpoints=1 kept this run's newest
    assert [s for s, _ in CheckpointDirs(out).complete()] == [2]
    run_id = json.loads((out / "run.json").read_text())["run_id"]
    assert run_id != json.loads((aside[0] / "run.json").read_text())["run_id"]
    assert {read_trainer_state(p)["run_id"] for _, p in CheckpointDirs(out).complete()} == {run_id}


def test_pruning_keeps_this_runs_newest_checkpoints_and_never_touches_another_runs(tmp_path):
    def write(dirs: CheckpointDirs, step: int) -> None:
        with dirs.writing(step) as tmp:
            (tmp / "policy.bin").write_bytes(os.urandom(64))
            write_trainer_state(tmp, {"step": step, "run_id": dirs.run_id})

    other, ours = CheckpointDirs(tmp_path, keep=2, run_id="other"), CheckpointDirs(tmp_path, keep=2, run_id="ours")
    for step in (4, 5, 6):  # another run's checkpoints, copied in by hand, say
        write(other, step)
    assert [s for s, _ in other.complete()] == [5, 6]
    for step in (1, 2, 3):
        write(ours, step)
    assert [(s, read_trainer_state(p)["run_id"]) for s, p in ours.complete()] == [
        (2, "ours"), (3, "ours"), (5, "other"), (6, "other")]
