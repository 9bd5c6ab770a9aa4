"""Stability monitors: per-step checks of the signs that GRPO runs go wrong, each with a threshold.

    monitors = StabilityMonitors(cfg.monitor)
    for line in monitors.check(step, metrics):      # warnings for monitors that crossed this step
        print(line)

Entropy is judged against the run's first step (a collapse falls below `entropy_low` x it,
a blow-up rises above `entropy_high` x it), response length against its first step
(`length_growth` x), KL to the reference against `kl_max`, searches per episode against
`searches_min`. A monitor warns once when it crosses and again only after it has come back,
so a long run's log stays readable. Baselines are the first step this process sees
(after a resume: the resumed step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from kr1.config import MonitorConfig


@dataclass(frozen=True)
class Crossing:
    monitor: str  # entropy_collapse | entropy_blowup | length_runaway | kl_runaway | searches_vanish
    step: int
    value: float
    threshold: float
    text: str  # one line for the log

    def __str__(self) -> str:
        return self.text


class StabilityMonitors:
    def __init__(self, cfg: MonitorConfig) -> None:
        self.cfg = cfg
        self.baseline: dict[str, float] = {}
        self.crossed: set[str] = set()

    def _limits(self, metrics: Mapping[str, float]) -> list[tuple[str, str, float, float, str]]:
        """(monitor, metric, value, threshold, direction) for the monitors this step's metrics allow."""
        c, base, out = self.cfg, self.baseline, []
        if "train/entropy" in metrics and base.get("train/entropy", 0) > 0:
            out.append(("entropy_collapse", "train/entropy", metrics["train/entropy"],
                        c.entropy_low * base["train/entropy"], "below"))
            out.append(("entropy_blowup", "train/entropy", metrics["train/entropy"],
                        c.entropy_high * base["train/entropy"], "above"))
        if "rollout/response_tokens" in metrics and base.get("rollout/response_tokens", 0) > 0:
            out.append(("length_runaway", "rollout/response_tokens", metrics["rollout/response_tokens"],
                        c.length_growth * base["rollout/response_tokens"], "above"))
        if "train/kl" in metrics:
            out.append(("kl_runaway", "train/kl", metrics["train/kl"], c.kl_max, "above"))
        if "rollout/searches" in metrics:
            out.append(("searches_vanish", "rollout/searches", metrics["rollout/searches"], c.searches_min, "below"))
        return out

    def check(self, step: int, metrics: Mapping[str, float]) -> list[Crossing]:
        """The monitors that crossed their threshold at `step` (1-based, as logged) and were not already over."""
        for key in ("train/entropy", "rollout/response_tokens"):
            if key in metrics and key not in self.baseline:
                self.baseline[key] = float(metrics[key])
        crossings = []
        for monitor, metric, value, threshold, direction in self._limits(metrics):
            over = value < threshold if direction == "below" else value > threshold
            if not over:
                self.crossed.discard(monitor)
                continue
            if monitor in self.crossed:
                continue
            self.crossed.add(monitor)
            text = (f"warning: step {step}: {monitor.replace('_', ' ')}: {metric} {value:.3g} is {direction} "
                    f"{threshold:.3g} (monitor.{_knob(monitor)})")
            crossing = Crossing(monitor, step, float(value), float(threshold), text)
            crossings.append(crossing)
        return crossings


def _knob(monitor: str) -> str:
    return {"entropy_collapse": "entropy_low", "entropy_blowup": "entropy_high", "length_runaway": "length_growth",
            "kl_runaway": "kl_max", "searches_vanish": "searches_min"}[monitor]
