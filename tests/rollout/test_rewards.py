"""Exact match, token F1 and format rewards on known cases."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from kr1.rollout.rewards import (combined_rewards, evidence_recall, exact_match, normalize_answer, score_episodes,
                                 token_f1)


def test_normalisation():
    assert normalize_answer("  The  Amber-Lantern!! ") == "amberlantern"
    assert normalize_answer("An apple, a day") == "apple day"


@pytest.mark.parametrize("answer, golds, em, f1", [
    ("Tavrin", ["tavrin"], 1.0, 1.0),
    ("the Tavrin.", ["Tavrin"], 1.0, 1.0),
    ("Tavrin city", ["Tavrin"], 0.0, 2 / 3),
    ("Arlen Voss", ["Voss", "Arlen Voss"], 1.0, 1.0),
    ("Voss Arlen", ["Arlen Voss"], 0.0, 1.0),
    ("Arlen", ["Arlen Voss"], 0.0, 2 / 3),
    ("1931", ["1932"], 0.0, 0.0),
    (None, ["x"], 0.0, 0.0),
    ("", ["x"], 0.0, 0.0),
    ("the", ["a"], 1.0, 0.0),
])
def test_em_and_f1(answer, golds, em, f1):
    assert exact_match(answer, golds) == em
    assert token_f1(answer, golds) == pytest.approx(f1)


def test_weights_combine():
    total, parts = combined_rewards(["Tavrin", "Tavrin city", None], [["Tavrin"]] * 3,
                                    {"em": 1.0, "f1": 0.5, "format": 0.2}, invalid_actions=[0, 1, 0])
    assert total == pytest.approx([1.0 + 0.5 + 0.2, 0.5 * 2 / 3, 0.0])
    assert parts["format"] == [1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="unknown reward"):
        combined_rewards(["x"], [["x"]], {"bleu": 1.0})


def test_score_episodes_arrays():
    episodes = [SimpleNamespace(question_id="q", answer="Tavrin", num_invalid=0),
                SimpleNamespace(question_id="q", answer=None, num_invalid=2)]
    scores = score_episodes(episodes, {"q": ["tavrin"]}, {"em": 1.0, "f1": 0.0, "format": 0.0})
    np.testing.assert_array_equal(scores.rewards, [1.0, 0.0])
    assert scores.rewards.dtype == np.float32
    with pytest.raises(KeyError, match="no gold answers"):
        score_episodes([SimpleNamespace(question_id="z", answer="a", num_invalid=0)], {}, {"em": 1.0})


def _searched(qid, *titles_per_query, answer="x"):
    return SimpleNamespace(question_id=qid, answer=answer, num_invalid=0,
                           retrieved_titles=[list(t) for t in titles_per_query])


def test_evidence_is_the_share_of_supporting_passages_read_each_counted_once():
    supporting = {"q": ["Arlen Voss", "The Amber Lantern"], "bare": []}
    assert evidence_recall([["The Amber Lantern", "Other"]], supporting["q"]) == 0.5
    assert evidence_recall([["the amber  lantern"], ["ARLEN VOSS"]], supporting["q"]) == 1.0  # case and spaces
    assert math.isnan(evidence_recall([["Arlen Voss"]], supporting["bare"]))
    once = _searched("q", ["The Amber Lantern"])
    farming = _searched("q", *[["The Amber Lantern", "Other"]] * 4)  # the same search four times
    both = _searched("q", ["The Amber Lantern"], ["Arlen Voss"])
    bare = _searched("bare", ["Arlen Voss"])
    golds = {"q": ["y"], "bare": ["y"]}
    scores = score_episodes([once, farming, both, bare], golds, {"em": 1.0, "evidence": 0.5}, supporting)
    np.testing.assert_allclose(scores.rewards, [0.25, 0.25, 0.5, 0.0])  # farming earns what one search does
    np.testing.assert_allclose(scores.evidence[:3], [0.5, 0.5, 1.0])
    assert math.isnan(scores.evidence[3])  # no supporting titles: no reward, and left out of the recall metric
    plain = score_episodes([both], golds, {"em": 1.0}, supporting)  # weight 0: recall measured, never rewarded
    assert plain.rewards[0] == 0.0 and plain.evidence[0] == 1.0


def test_answered_evidence_pays_only_episodes_that_answer():
    """Searching until the turns run out reads the passages but earns nothing under the answered variant."""
    supporting = {"q": ["Arlen Voss", "The Amber Lantern"]}
    answered = _searched("q", ["The Amber Lantern"], ["Arlen Voss"])
    unanswered = _searched("q", ["The Amber Lantern"], ["Arlen Voss"], answer=None)
    golds = {"q": ["y"]}
    gated = score_episodes([answered, unanswered], golds, {"em": 1.0, "answered_evidence": 0.5}, supporting)
    np.testing.assert_allclose(gated.rewards, [0.5, 0.0])
    np.testing.assert_allclose(gated.evidence, [1.0, 1.0])  # both read the passages: the metric says so
    plain = score_episodes([answered, unanswered], golds, {"em": 1.0, "evidence": 0.5}, supporting)
    np.testing.assert_allclose(plain.rewards, [0.5, 0.5])
