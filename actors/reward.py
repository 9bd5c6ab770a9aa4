"""The reward scorer actor: batches of episodes in, `EpisodeScores` out.

    scorer = start_scorer(cfg.reward)               # restarts if it dies; calls are retried
    scores = ray.get(scorer.score.remote(episodes_ref, golds))

The reward functions are the plain functions of `kr1.rollout.rewards`; this role only batches
them, so scoring can run beside the reference model's forward pass.
"""

from __future__ import annotations

import sys
from typing import Any, Mapping, Sequence

import ray

from kr1.cluster import actor_names
from kr1.config import RewardConfig
from kr1.rollout.episodes import Episode
from kr1.rollout.rewards import EpisodeScores, score_episodes


class RewardScorer:
    """Scores episodes with the configured weights; a plain class that `ray.remote` wraps."""

    def __init__(self, cfg: RewardConfig, index: int = 0, search_path: Sequence[str] = ()) -> None:
        self.index = index
        # a reward named by import path imports here as in the driver (Ray workers do not share its sys.path)
        sys.path.extend(p for p in search_path if p not in sys.path)
        self.weights = cfg.effective_weights()

    def __repr__(self) -> str:
        return f"RewardScorer({self.index})"

    def ready(self) -> bool:
        return True

    def score(self, episodes: Sequence[Episode], golds: Mapping[str, Sequence[str]],
              supporting: Mapping[str, Sequence[str]] | None = None,
              datasets: Mapping[str, str] | None = None) -> EpisodeScores:
        return score_episodes(episodes, golds, self.weights, supporting, datasets)


def start_scorer(cfg: RewardConfig, max_restarts: int = 3) -> Any:
    """The scorer as a Ray actor that restarts when it dies; scoring is pure, so a retried call is safe."""
    [name] = actor_names("reward-scorer", 1)
    options = {"name": name, "num_cpus": 0.1, "max_restarts": max_restarts, "max_task_retries": max_restarts}
    return ray.remote(RewardScorer).options(**options).remote(cfg, 0, list(sys.path))
