"""Plot a run's reward, EM, searches and entropy curves from its TensorBoard events, as a PNG.

    python -m pipelines.plot_run --run runs/default --out kr1/figures/default_run.png

Reads `<run>/tensorboard` (what `python -m kr1.driver` writes) and draws the training
reward, the rollout and dev-split EM, searches per episode in training and on dev, and the
policy's entropy against the step. Needs matplotlib
(`pip install -e ".[bench]"`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from kr1.errors import run_cli

CURVES = [("reward/mean", "training reward (mean)"), ("rollout/em", "training EM (%)"), ("eval/em", "dev EM (%)"),
          ("rollout/searches", "searches per episode (training)"), ("eval/searches", "searches per episode (dev)"),
          ("train/entropy", "policy entropy (nats per token)")]


def read_scalars(run: Path) -> dict[str, tuple[list[int], list[float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    out = {}
    for tag, _ in CURVES:
        if tag in tags:
            # a resumed run appends events: keep the last value written for each step
            points = {e.step: e.value for e in events.Scalars(tag)}
            steps = sorted(points)
            out[tag] = (steps, [points[s] for s in steps])
    return out


def plot(run: Path, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scalars = read_scalars(run)
    if not scalars:
        raise FileNotFoundError(f"{run / 'tensorboard'}: no kr1 scalars to plot")
    fig, axes = plt.subplots(2, (len(CURVES) + 1) // 2, figsize=(4.2 * ((len(CURVES) + 1) // 2), 6.8))
    for ax, (tag, label) in zip(axes.flat, CURVES):
        if tag in scalars:
            steps, values = scalars[tag]
            ax.plot(steps, values, marker="o" if len(steps) < 20 else None, markersize=3)
        ax.set_title(label)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(f"kr1 run: {run}")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="trainer.output_dir of the run")
    parser.add_argument("--out", type=Path, required=True, help="PNG file to write")
    args = parser.parse_args(argv)
    print(f"wrote {plot(args.run, args.out)}")


if __name__ == "__main__":
    run_cli(main)
