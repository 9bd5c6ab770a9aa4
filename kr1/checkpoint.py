"""Checkpoint directories: written aside, renamed into place, found again on resume.

    ckpt = CheckpointDirs(output_dir)
    with ckpt.writing(step=10) as tmp:      # .step_000010.partial-*/ while being written
        ...                                 # policy/ (HF), learner/ (sharded), trainer_state.json
    # now output_dir/checkpoints/step_000010/
    latest = ckpt.latest()                  # (10, path) or None; partial directories never count

A checkpoint directory exists under its final name only once everything in it has been
written (atomic rename), so a run killed mid-write leaves the previous one as the latest.
The writers must see the same file system (a shared one on a multi-node cluster).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from pathlib import Path
from typing import Any, Iterator

from kr1.atomic_write import atomic_directory, write_json

STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"step_(\d{6})")


class CheckpointDirs:
    def __init__(self, output_dir: Path, keep: int = 3) -> None:
        self.root = Path(output_dir) / "checkpoints"
        self.keep = keep

    def path(self, step: int) -> Path:
        return self.root / f"step_{step:06d}"

    @contextlib.contextmanager
    def writing(self, step: int) -> Iterator[Path]:
        """A temporary directory that becomes `step_NNNNNN` when the block succeeds."""
        with atomic_directory(self.path(step)) as tmp:
            yield tmp
        self._prune()

    def complete(self) -> list[tuple[int, Path]]:
        found = []
        if self.root.is_dir():
            for path in self.root.iterdir():
                match = _NAME.fullmatch(path.name)
                if match and (path / STATE_FILE).is_file():
                    found.append((int(match.group(1)), path))
        return sorted(found)

    def latest(self) -> tuple[int, Path] | None:
        found = self.complete()
        return found[-1] if found else None

    def _prune(self) -> None:
        for _, path in self.complete()[:-self.keep]:
            shutil.rmtree(path, ignore_errors=True)


def write_trainer_state(directory: Path, state: dict[str, Any]) -> None:
    write_json(directory / STATE_FILE, state)


def read_trainer_state(directory: Path) -> dict[str, Any]:
    return json.loads((directory / STATE_FILE).read_text())
