"""Plot a run's curves from its TensorBoard events, as a PNG: reward, EM and searches by question type,
evidence recall and entropy.

    plot(Path("runs/default"), Path("kr1/figures/default_run.png"))
    python -m pipelines.plot_run --run runs/default --out kr1/figures/default_run.png   # the same, as a command

Reads `<run>/tensorboard` (what `python -m kr1.driver` writes) and draws, against the step: the
training reward, dev EM by question type (and overall), searches per episode by question type
in training, dev searches per episode by type, the share of supporting passages read
(evidence recall, training and dev) and the policy's entropy. Needs matplotlib
(`pip install -e ".[bench]"`).
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Sequence

from kr1.errors import UserError

# (panel title, tag patterns): each matching tag is one line of the panel
PANELS = [
    ("training reward (mean)", ["reward/mean"]),
    ("dev EM by question type (%)", ["eval/em", "eval/em_*"]),
    ("searches per episode by type (training)", ["rollout/searches", "rollout/searches_*"]),
    ("searches per episode by type (dev)", ["eval/searches", "eval/searches_*"]),
    ("evidence recall (% of supporting passages)", ["rollout/evidence_recall", "eval/evidence_recall"]),
    ("fixed probe of training questions, greedy (%)", ["probe/em", "probe/evidence_recall"]),
    ("policy entropy (nats per token)", ["train/entropy"]),
]


SMOOTHING = 10


def line_label(tag: str) -> str:
    """What a line is within its panel: the question type, "all", or training / dev."""
    section, name = tag.split("/", 1)
    for prefix in ("em_", "searches_"):
        if name.startswith(prefix):
            return name[len(prefix):]
    if section == "probe":
        return name.replace("_", " ")
    if name in ("em", "searches"):
        return "all"
    return {"rollout": "training", "eval": "dev"}.get(section, tag)


def trailing_mean(values: Sequence[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def read_scalars(run: Path) -> dict[str, tuple[list[int], list[float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    wanted = [p for _, patterns in PANELS for p in patterns]
    out = {}
    for tag in sorted(events.Tags()["scalars"]):
        if any(fnmatch.fnmatchcase(tag, p) for p in wanted):
            # a resumed run appends events: keep the last value written for each step
            points = {e.step: e.value for e in events.Scalars(tag)}
            steps = sorted(points)
            out[tag] = (steps, [points[s] for s in steps])
    return out


def plot(run: Path, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not (run / "tensorboard").is_dir():
        raise UserError(f"{run}: no tensorboard directory (give --run a kr1 run's trainer.output_dir)")
    scalars = read_scalars(run)
    if not scalars:
        raise UserError(f"{run / 'tensorboard'}: no kr1 scalars to plot")
    cols = (len(PANELS) + 1) // 2
    fig, axes = plt.subplots(2, cols, figsize=(4.6 * cols, 7.0))
    for ax, (title, patterns) in zip(axes.flat, PANELS):
        tags = [t for p in patterns for t in scalars if fnmatch.fnmatchcase(t, p)]
        smoothed = False
        for tag in dict.fromkeys(tags):
            steps, values = scalars[tag]
            if len(steps) > 40:  # a per-step training curve: its trailing mean, which a reader can follow
                values, smoothed = trailing_mean(values, SMOOTHING), True
            ax.plot(steps, values, label=line_label(tag) if len(tags) > 1 else None,
                    marker=None if len(steps) > 40 else "o", markersize=3, alpha=0.85)
        if len(tags) > 1:
            ax.legend(fontsize=7)
        ax.set_title(title + (f", {SMOOTHING}-step mean" if smoothed else ""), fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(PANELS):]:  # an odd number of panels leaves one slot empty
        ax.axis("off")
    fig.suptitle(f"kr1 run: {run}")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
