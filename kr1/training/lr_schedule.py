"""The learning rate of each training step: linear warm-up, then constant or cosine decay.

    rate = learning_rate(cfg.learner, step, cfg.trainer.total_steps)

A pure function of the step, so a resumed run trains at exactly the rates of an uninterrupted
one and nothing but the step is checkpointed. The rate changes once per training step, as
verl's scheduler (Search-R1's trainer) steps once per `update_actor`: every mini-batch of a
step takes the same rate. Search-R1's GRPO script warms up over `lr_warmup_steps_ratio=0.285`
of its 1,005 steps (286) and stays constant after.
"""

from __future__ import annotations

import math

from kr1.config import LearnerConfig


def warmup_steps(cfg: LearnerConfig, total_steps: int) -> int:
    """Steps of the linear warm-up: `lr_warmup_ratio` of the run, rounded down as verl rounds it."""
    return int(cfg.lr_warmup_ratio * total_steps)


def learning_rate(cfg: LearnerConfig, step: int, total_steps: int) -> float:
    """The rate of 0-based `step`: `lr` x (step + 1) / warm-up steps while warming up (counted from 1, so the
    first update is not spent at rate 0 as transformers' schedule counted from 0 spends it), then `lr`
    (constant) or a cosine from `lr` down to `lr x lr_min_ratio` at the last step (cosine)."""
    warmup = warmup_steps(cfg, total_steps)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    if cfg.lr_schedule == "constant":
        return cfg.lr
    decay = max(1, total_steps - warmup - 1)  # the last step reaches the floor
    progress = min(1.0, (step - warmup) / decay)
    floor = cfg.lr * cfg.lr_min_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
