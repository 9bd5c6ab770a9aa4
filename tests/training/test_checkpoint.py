"""Checkpoint directories: a damaged or partial checkpoint is never resumed from, whatever the damage."""

from __future__ import annotations

import json
import os
import shutil

from kr1.training.checkpoint import STATE_FILE, CheckpointDirs, write_trainer_state


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
