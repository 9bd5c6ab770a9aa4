"""What a training run reports: TensorBoard scalars, a metrics JSONL, one quiet console line per step.

    logger = RunLogger(output_dir)                 # <output_dir>/tensorboard, <output_dir>/metrics.jsonl
    logger.log(step, {"reward/mean": 0.4, "time/rollout": 12.0, ...})
    with timer("rollout"): ...                     # PhaseTimer: seconds per named phase

Open the scalars with `tensorboard --logdir <output_dir>/tensorboard`.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Iterator, Mapping

from kr1.atomic_write import atomic_file
from kr1.errors import writes_to

CONSOLE = [("reward/mean", "reward {:.3f}"), ("rollout/em", "em {:.1f}"), ("rollout/searches", "searches {:.2f}"),
           ("rollout/turns", "turns {:.2f}"), ("train/kl", "kl {:.4f}"), ("eval/em", "eval em {:.1f}"),
           ("time/step", "{:.1f}s")]


class PhaseTimer:
    """Accumulates wall time per phase until `pop()`."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.times[phase] = self.times.get(phase, 0.0) + time.perf_counter() - start

    def pop(self) -> dict[str, float]:
        times, self.times = self.times, {}
        return times


class RunLogger:
    """Logs steps after `start_step` (the resumed checkpoint's step; 0 for a fresh run).

    What an earlier run in the same directory logged after `start_step` (a run killed between
    checkpoints) is dropped from metrics.jsonl and hidden in TensorBoard (`purge_step`), so
    every step appears once.
    """

    def __init__(self, output_dir: Path, total_steps: int, quiet: bool = False, start_step: int = 0) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.output_dir = Path(output_dir)
        purge_step = start_step + 1 if start_step else 0
        path = self.output_dir / "metrics.jsonl"
        with writes_to("the run's metrics and TensorBoard events", self.output_dir):
            self.writer = SummaryWriter(str(self.output_dir / "tensorboard"), purge_step=purge_step)
            kept = _rows_up_to(path, start_step) if start_step else []
            with atomic_file(path) as handle:
                handle.writelines(kept)
            self.jsonl = open(path, "a", encoding="utf-8")
        self.total_steps = total_steps
        self.quiet = quiet

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        """Write every scalar for `step` (1-based: steps completed) and print one line."""
        with writes_to(f"the step-{step} metrics and TensorBoard events", self.output_dir):
            for name, value in metrics.items():
                self.writer.add_scalar(name, value, step)
            self.writer.flush()
            self.jsonl.write(json.dumps({"step": step, **{k: float(v) for k, v in metrics.items()}}) + "\n")
            self.jsonl.flush()
        if not self.quiet:
            parts = [fmt.format(metrics[key]) for key, fmt in CONSOLE if key in metrics]
            print(f"step {step}/{self.total_steps}  " + "  ".join(parts), flush=True)

    def close(self) -> None:
        for close in (self.writer.close, self.jsonl.close):
            with contextlib.suppress(OSError):  # every step was flushed when logged: a failing close loses nothing
                close()


def _rows_up_to(path: Path, step: int) -> list[str]:
    """The lines of a metrics file logged at or before `step` (a half-written last line is dropped)."""
    kept = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
                kept.append(line if line.endswith("\n") else line + "\n")
    return kept
