"""The reward scorer actor: the pure reward functions' scores, through a restart mid-call; named in the dashboard."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import ray

from actors.reward import RewardScorer, start_scorer
from kr1.config import RewardConfig, load_config
from kr1.rollout.episodes import Episode
from kr1.rollout.rewards import score_episodes


def test_reward_actor_equals_the_pure_function(ray_session):
    episodes = [SimpleNamespace(question_id="q", answer=a, num_invalid=n) for a, n in
                [("Tavrin", 0), ("tavrin city", 1), (None, 0)]]
    cfg = RewardConfig(em_weight=1.0, f1_weight=0.5, format_weight=0.1)
    scorer = ray.remote(RewardScorer).remote(cfg)
    remote = ray.get(scorer.score.remote(episodes, {"q": ["Tavrin"]}))
    local = score_episodes(episodes, {"q": ["Tavrin"]}, {"em": 1.0, "f1": 0.5, "format": 0.1})
    for name in ("rewards", "em", "f1", "format"):
        np.testing.assert_array_equal(getattr(remote, name), getattr(local, name))
    ray.kill(scorer)


def test_a_killed_reward_scorer_scores_the_same(ray_session, actor_process):
    cfg = load_config("default", ["reward.f1_weight=1.0", "reward.format_weight=0.5"]).reward
    answers = ["Tavrin", "tavrin city", None, "Arlen Voss"] * 10_000  # a batch that takes a while to score
    episodes = [Episode(f"q{i % 4}", i, [1], actions=["search", "answer"], answer=a, finish="answer")
                for i, a in enumerate(answers)]
    golds = {"q0": ["Tavrin"], "q1": ["Tavrin"], "q2": ["x"], "q3": ["Arlen Voss", "A. Voss"]}
    expected = RewardScorer(cfg).score(episodes, golds)
    scorer = start_scorer(cfg)
    try:
        assert any(name.startswith("reward-scorer0-") for name in ray.util.list_named_actors())
        first = actor_process.pid(scorer)
        ref = scorer.score.remote(episodes, golds)
        ray.kill(scorer, no_restart=False)  # while it scores (or just before: either way the call survives)
        mid_call = ray.get(ref)
        second = actor_process.restarted(scorer, first)
        ray.kill(scorer, no_restart=False)
        between = ray.get(scorer.score.remote(episodes, golds))  # sent to a dying or restarting actor
        actor_process.restarted(scorer, second)
    finally:
        ray.kill(scorer)
    for got in (between, mid_call):
        np.testing.assert_array_equal(got.rewards, expected.rewards)
        np.testing.assert_array_equal(got.em, expected.em)
