"""A run's state on disk: one run per output directory, its checkpoints, resume, and recovery.

    claim_output_dir(out, cfg.trainer)               # a fresh run refuses (or moves aside) another run's directory
    state = RunState(cfg, out, inputs)
    resume_from = state.resume_point()               # trainer.resume=true: the checkpoint to continue, checked
    state.save(step, learners, rollouts)             # every trainer.checkpoint_every steps, written aside
    step = state.restore(path, learners, rollouts)   # policy, optimizer, driver RNG, queued rollouts
    step = recover(run, error, step)                 # a dead learner or reference worker: rebuilt, the step redone

A directory holds one run in time as well as in space: a fresh run (`trainer.resume=false`)
in a directory with another run's checkpoints or metrics is refused in one line, or with
`trainer.overwrite=true` that run is moved to a sibling directory, never deleted. Every
checkpoint names its run (`run_id`); pruning after a write keeps the newest
`trainer.keep_checkpoints` of this run's own checkpoints and touches no other.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import ray
import torch

from actors.learner import LearnerGroup
from actors.reference import ReferencePool
from kr1.atomic_write import write_json
from kr1.config import Config, TrainerConfig, to_yaml
from kr1.errors import UserError, first_line, writes_to
from kr1.run.resume_check import INPUTS_FILE, check_resume
from kr1.run.rollout_queue import QUEUE_FILE
from kr1.run.run_lock import LOCK_FILE
from kr1.run.run_logger import RunLogger
from kr1.training.checkpoint import CheckpointDirs, read_trainer_state, write_trainer_state

RUN_FILE = "run.json"  # the run id of the run this directory holds


class EarlierRunError(UserError):
    """A fresh run was pointed at a directory that holds another run (one-line message)."""


def earlier_run(output_dir: Path) -> str | None:
    """What of another run `output_dir` holds (checkpoints, logged steps), or None when it holds none."""
    found = []
    checkpoints = sorted(p.name for p in (output_dir / "checkpoints").glob("*step_*")) \
        if (output_dir / "checkpoints").is_dir() else []
    if checkpoints:
        found.append(f"{len(checkpoints)} checkpoint(s), last {checkpoints[-1]}")
    metrics = output_dir / "metrics.jsonl"
    if metrics.is_file():
        rows = sum(1 for line in metrics.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip())
        if rows:
            found.append(f"metrics.jsonl with {rows} step(s)")
    return ", ".join(found) or None


def claim_output_dir(output_dir: Path, trainer: TrainerConfig) -> None:
    """A fresh run's directory must hold no other run: refused in one line, or moved aside with
    trainer.overwrite=true. Call it holding the directory's lock; a resumed run continues what is there."""
    if trainer.resume:
        return
    held = earlier_run(output_dir)
    if held is None:
        return
    if not trainer.overwrite:
        raise EarlierRunError(
            f"trainer.output_dir {output_dir} holds an earlier run ({held}): continue it with trainer.resume=true, "
            f"or give this run a new trainer.output_dir (trainer.overwrite=true moves the earlier run aside)")
    aside = output_dir.with_name(f"{output_dir.name}.previous-{time.strftime('%Y%m%d-%H%M%S')}")
    with writes_to("the earlier run, moved aside", aside.parent):
        aside.mkdir()
        for entry in output_dir.iterdir():
            if entry.name != LOCK_FILE:
                entry.rename(aside / entry.name)
    print(f"trainer.overwrite: moved the earlier run in {output_dir} ({held}) to {aside}", file=sys.stderr)


class RunState:
    """What a checkpoint holds, written and read back: the learners' state (policy, optimizer, RNG), the config
    and inputs it trained, the queued rollouts (async mode), and the trainer state (step, run id, the size of
    every file). The driver draws no random numbers (a step's prompts and sampling seeds are functions of
    trainer.seed and the step), so it has no RNG state to keep."""

    def __init__(self, cfg: Config, output_dir: Path, inputs: dict[str, Any]) -> None:
        self.cfg, self.output_dir, self.inputs = cfg, output_dir, inputs
        self.dirs = CheckpointDirs(output_dir, keep=cfg.trainer.keep_checkpoints)

    def resume_point(self) -> tuple[int, Path] | None:
        """The checkpoint to resume from, once it is known to train what this run trains (before any actor
        starts); None when there is none."""
        for path in self.dirs.remove_partial():
            print(f"trainer.resume: removed {path.name}, left by a run killed while writing it", file=sys.stderr)
        for _, path, damage in self.dirs.scan():
            if damage:
                print(f"trainer.resume: skipping {path}: {damage}", file=sys.stderr)
        latest = self.dirs.latest()
        if latest is None:
            print(f"trainer.resume: no checkpoint in {self.dirs.root}, starting from step 0", file=sys.stderr)
            return None
        for note in check_resume(self.cfg, latest[1], self.inputs):
            print(note, file=sys.stderr)
        return latest

    def begin(self, resume_from: tuple[int, Path] | None) -> None:
        """Name the run (a resumed run keeps its checkpoint's id) and write its config and id."""
        run_file = self.output_dir / RUN_FILE
        if resume_from is not None:
            run_id = read_trainer_state(resume_from[1]).get("run_id")
        else:
            run_id = _read_run_id(run_file) if self.cfg.trainer.resume else None
        self.dirs.run_id = run_id or uuid.uuid4().hex[:12]
        with writes_to("the run's config", self.output_dir):
            (self.output_dir / "config.yaml").write_text(to_yaml(self.cfg))
            write_json(run_file, {"run_id": self.dirs.run_id})

    def due(self, step: int, stopping: bool) -> bool:
        """Every `trainer.checkpoint_every` steps, after the last, and when the run stops on a collapse."""
        done, every = step + 1, self.cfg.trainer.checkpoint_every
        return every > 0 and done % every == 0 or done == self.cfg.trainer.total_steps or stopping

    def save(self, step: int, learners: Any, rollouts: Any) -> Path:
        """The state after `step`, written aside, then renamed; the oldest of this run's own beyond
        trainer.keep_checkpoints are deleted."""
        done = step + 1
        latest = self.dirs.latest()
        kept = f"; the last complete one ({latest[1].name}) is untouched" if latest else ""
        # the error is read inside the partial directory: once it is removed, a full disk has room again
        with self.dirs.writing(done) as tmp, \
                writes_to(f"the step-{done} checkpoint", self.dirs.root, kept, probe=tmp):
            learners.save_checkpoint(str(tmp))
            (tmp / "config.yaml").write_text(to_yaml(self.cfg))
            write_json(tmp / INPUTS_FILE, self.inputs)
            queued = rollouts.snapshot()
            if queued is not None:
                torch.save(queued, tmp / QUEUE_FILE)
            write_trainer_state(tmp, {"step": done, "run_id": self.dirs.run_id, "time": time.time()})  # last
        return self.dirs.path(done)

    def restore(self, step: int, path: Path, learners: Any, rollouts: Any) -> int:
        """Load checkpoint `path` of `step` into the learners and the rollout source; the caller pushes the
        weights to the engines."""
        learners.load_checkpoint(str(path))
        queue = path / QUEUE_FILE
        rollouts.restore(torch.load(queue, weights_only=False) if queue.is_file() else None)
        print(f"resumed from {path} (step {read_trainer_state(path)['step']})", file=sys.stderr)
        return step

    def latest(self) -> tuple[int, Path] | None:
        return self.dirs.latest()


def _read_run_id(path: Path) -> str | None:
    try:
        return json.loads(path.read_text()).get("run_id")
    except (OSError, ValueError, AttributeError):
        return None


REBUILD_ATTEMPTS = 3  # a rebuilt pool placed on a node that is lost but not yet known dead fails: built again


def recover(run: Any, error: Exception, step: int) -> int:
    """After a learner or reference worker died in `step`: returns the step to go on from. A dead reference
    worker alone is rebuilt (it is the frozen starting model) and the step is redone with the learners as they
    are; a dead learner rebuilds both pools in their placement, reloads the last complete checkpoint (or the
    starting model), pushes it to the engines and drops what was logged after it. Any other error, or one past
    trainer.max_recoveries, stands. `run` is the started kr1.run.training_run.TrainingRun, whose pools this
    replaces. A rebuild that dies too (its node was lost and Ray does not know it yet) is done again, in full."""
    cfg = run.cfg
    lost = [name for name, pool in (("learner", run.learners), ("reference", run.reference)) if not pool.alive()]
    if not lost or run.recoveries >= cfg.trainer.max_recoveries:
        raise error
    run.recoveries += 1
    count = f"recovery {run.recoveries} of trainer.max_recoveries={cfg.trainer.max_recoveries}"
    for attempt in range(REBUILD_ATTEMPTS):
        try:
            return _rebuild(run, lost, first_line(error)[:200], step, count)
        except ray.exceptions.RayError as again:
            if attempt + 1 == REBUILD_ATTEMPTS:
                raise
            error, lost = again, ["learner", "reference"]
    raise AssertionError("unreachable")


def _rebuild(run: Any, lost: list[str], reason: str, step: int, count: str) -> int:
    cfg = run.cfg
    if lost == ["reference"]:
        print(f"a reference worker died ({reason}); rebuilding the reference workers and redoing step {step + 1} "
              f"({count})", file=sys.stderr, flush=True)
        _stop_pools(run.reference)
        run.reference = ReferencePool(cfg, run.assets.model_path, run.placement, run.learners)
        return step
    print(f"a {' and a '.join(lost)} worker died ({reason}); rebuilding from the last checkpoint ({count})",
          file=sys.stderr, flush=True)
    _stop_pools(run.reference, run.learners)
    run.learners = LearnerGroup(cfg, run.assets.model_path, run.placement)
    run.reference = ReferencePool(cfg, run.assets.model_path, run.placement, run.learners)
    latest = run.state.latest()
    if latest:
        step = run.state.restore(*latest, run.learners, run.rollouts)
    else:  # the rebuilt learners hold the starting model: so must the engines
        step = 0
        run.rollouts.clear()
    run.sync_weights()
    run.logger.close()
    run.logger = RunLogger(run.output_dir, cfg.trainer.total_steps, quiet=run.quiet, start_step=step)
    if step == 0:  # back to the starting model, whose logged evaluation was dropped with the rest
        run.evaluate_start()
    return step


def _stop_pools(*pools: Any) -> None:
    for pool in pools:
        for worker in pool.workers:  # no goodbye: a survivor may sit in a collective with the dead
            ray.kill(worker)
        pool.close()
