"""The reward scorer actor: the pure reward functions' scores, through a restart mid-call; named in the dashboard."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import pytest
import ray

from actors.reward import RewardScorer, start_scorer
from kr1.config import RewardConfig, load_config
from kr1.errors import run_cli
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


def test_a_reward_of_ones_own_scores_in_the_actor_and_its_failure_is_one_line(ray_session, capsys):
    """The scorer imports `reward_plugins` (on the tests' sys.path, not on Ray workers'); a reward that breaks the
    contract in the actor reaches the command as its one line, without the actor's traceback."""
    episodes = [Episode("q", 0, [1], actions=["search", "search", "answer"], queries=["a", "b"],
                        retrieved_ids=[["p1"], ["p2"]], retrieved_titles=[["A"], ["B"]], answer="Tavrin",
                        finish="answer"), Episode("q", 1, [1], actions=["answer"], answer="x", finish="answer")]
    cfg = RewardConfig(weights={"em": 1.0, "reward_plugins:searched_twice": 0.5})
    scorer = ray.remote(RewardScorer).remote(cfg, 0, sys.path)
    scores = ray.get(scorer.score.remote(episodes, {"q": ["Tavrin"]}))
    np.testing.assert_array_equal(scores.rewards, [1.5, 0.0])
    broken = ray.remote(RewardScorer).remote(RewardConfig(weights={"reward_plugins:wrong_length": 1.0}), 0, sys.path)
    with pytest.raises(SystemExit) as exited:
        run_cli(lambda: ray.get(broken.score.remote(episodes, {"q": ["Tavrin"]})))
    assert exited.value.code == 2
    assert capsys.readouterr().err == ("error: reward 'reward_plugins:wrong_length' returned 3 scores for 2 episodes "
                                       "(one float per episode)\n")
    ray.kill(scorer)
    ray.kill(broken)


def test_a_killed_reward_scorer_scores_the_same(ray_session, actor_process):
    cfg = load_config("default", ["reward.weights.f1=1.0", "reward.weights.format=0.5"]).reward
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
