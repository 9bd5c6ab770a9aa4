"""Checkpoint directories: written aside, renamed into place, found again on resume.

    ckpt = CheckpointDirs(output_dir, keep=3, run_id="3f9c...")
    with ckpt.writing(step=10) as tmp:      # .step_000010.partial-*/ while being written
        ...                                 # policy/ (HF), learner/ (sharded), trainer_state.json
    # now output_dir/checkpoints/step_000010/
    latest = ckpt.latest()                  # (10, path) or None; partial directories never count

A checkpoint directory exists under its final name only once everything in it has been
written (atomic rename), so a run killed mid-write leaves the previous one as the latest.
`trainer_state.json` is written last and lists every other file with its size; a directory
without it, with an unreadable one, or with a file missing or of another size (copied or
synced by hand, a full disk) is never resumed from. The writers must see the same file
system (a shared one on a multi-node cluster).

Each checkpoint's state names the run that wrote it (`run_id`); after a write, only that run's
own complete checkpoints beyond the newest `keep` are deleted, never another run's.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from pathlib import Path
from typing import Any, Iterator

from kr1.atomic_write import atomic_directory, write_json
from kr1.errors import first_line

STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"step_(\d{6})")


class CheckpointDirs:
    def __init__(self, output_dir: Path, keep: int = 3, run_id: str = "") -> None:
        self.root = Path(output_dir) / "checkpoints"
        self.keep, self.run_id = keep, run_id

    def path(self, step: int) -> Path:
        return self.root / f"step_{step:06d}"

    @contextlib.contextmanager
    def writing(self, step: int) -> Iterator[Path]:
        """A temporary directory that becomes `step_NNNNNN` when the block succeeds."""
        with atomic_directory(self.path(step)) as tmp:
            yield tmp
        self._prune()

    def scan(self) -> list[tuple[int, Path, str | None]]:
        """(step, path, why it cannot be resumed from or None) of every `step_NNNNNN`, by step."""
        found = []
        if self.root.is_dir():
            for path in self.root.iterdir():
                match = _NAME.fullmatch(path.name)
                if match:
                    step = int(match.group(1))
                    found.append((step, path, damage(path, step)))
        return sorted(found)

    def complete(self) -> list[tuple[int, Path]]:
        return [(step, path) for step, path, problem in self.scan() if problem is None]

    def latest(self) -> tuple[int, Path] | None:
        found = self.complete()
        return found[-1] if found else None

    def remove_partial(self) -> list[Path]:
        """Delete what killed writers left (`.step_*.partial-*`, `.step_*.old-*`); returns the paths."""
        leftovers = sorted(self.root.glob(".step_*.partial-*")) + sorted(self.root.glob(".step_*.old-*"))
        for path in leftovers:
            shutil.rmtree(path, ignore_errors=True)
        return leftovers

    def _prune(self) -> None:
        own = [path for _, path in self.complete() if read_trainer_state(path).get("run_id") == self.run_id]
        for path in own[:-self.keep]:
            shutil.rmtree(path, ignore_errors=True)


def damage(path: Path, step: int) -> str | None:
    """Why checkpoint directory `path` of `step` cannot be resumed from, or None when it is whole."""
    try:
        state = json.loads((path / STATE_FILE).read_text())
    except FileNotFoundError:
        return f"no {STATE_FILE}"
    except (OSError, ValueError) as e:
        return f"{STATE_FILE} is unreadable ({first_line(e)})"
    if not isinstance(state, dict) or state.get("step") != step or not isinstance(state.get("files", {}), dict):
        return f"{STATE_FILE} is not the state of step {step}"
    for name, size in state.get("files", {}).items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        actual = file.stat().st_size
        if actual != size:
            return f"{name} holds {actual} bytes, {size} were written"
    return None


def write_trainer_state(directory: Path, state: dict[str, Any]) -> None:
    """Write this last: it records every other file's size, which `damage` checks on resume."""
    files = {str(p.relative_to(directory)): p.stat().st_size
             for p in sorted(Path(directory).rglob("*")) if p.is_file() and p.name != STATE_FILE}
    write_json(directory / STATE_FILE, {**state, "files": files})


def read_trainer_state(directory: Path) -> dict[str, Any]:
    return json.loads((directory / STATE_FILE).read_text())
