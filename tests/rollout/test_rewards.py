"""Exact match, token F1, sub-EM and format rewards on known cases, and sub-EM and F1 against the published
definitions (Search-R1's `subem_check`, the official HotpotQA `f1_score`) on generated strings."""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from kr1.config import ConfigError, RewardConfig, load_config
from kr1.rollout.episodes import Episode
from kr1.rollout.rewards import (RewardError, combined_rewards, cover_exact_match, evidence_recall, exact_match,
                                 normalize_answer, score_episodes, sub_exact_match, token_f1)


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
    with pytest.raises(RewardError, match="unknown reward 'bleu'"):
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


# The published definitions, written out from their sources, to hold kr1's against on generated strings.
def _published_normalize(s):  # SQuAD's and HotpotQA's normalize_answer, as Search-R1's qa_em.py has it
    s = "".join(ch for ch in s.lower() if ch not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", s).split())


def _published_subem_check(prediction, golden_answers):  # Search-R1 qa_em.subem_check, FlashRAG's sub_em
    normalized_prediction = _published_normalize(prediction)
    return int(any(_published_normalize(g) in normalized_prediction for g in golden_answers))


def _published_hotpot_f1(prediction, ground_truth):  # hotpot_evaluate_v1.f1_score
    normalized_prediction, normalized_ground_truth = map(_published_normalize, (prediction, ground_truth))
    if normalized_prediction in ["yes", "no", "noanswer"] and normalized_prediction != normalized_ground_truth:
        return 0
    if normalized_ground_truth in ["yes", "no", "noanswer"] and normalized_prediction != normalized_ground_truth:
        return 0
    prediction_tokens, ground_truth_tokens = normalized_prediction.split(), normalized_ground_truth.split()
    num_same = sum((Counter(prediction_tokens) & Counter(ground_truth_tokens)).values())
    if num_same == 0:
        return 0
    precision, recall = num_same / len(prediction_tokens), num_same / len(ground_truth_tokens)
    return 2 * precision * recall / (precision + recall)


# short texts from a small vocabulary so that matches, substrings and yes/no answers come up often
_words = st.sampled_from(["yes", "no", "noanswer", "the", "a", "an", "Voss", "vossberg", "Arlen", "1931", "19",
                          "no.", "Yes!", "town", "of", "Ærø", "x-y", ""])
_texts = st.lists(_words, max_size=5).map(" ".join) | st.text(max_size=12)


@settings(max_examples=2000, deadline=None)
@given(_texts, st.lists(_texts, min_size=1, max_size=3))
def test_sub_em_and_f1_equal_the_published_definitions(answer, golds):
    assert sub_exact_match(answer, golds) == _published_subem_check(answer, golds)
    # kr1 takes the best alias, as Search-R1 and FlashRAG do over golden answers
    assert token_f1(answer, golds) == pytest.approx(max(_published_hotpot_f1(answer, g) for g in golds))


@pytest.mark.parametrize("answer, golds, sub, cover, f1", [
    ("Vossberg", ["Voss"], 1.0, 0.0, 0.0),       # a plain substring, not on word boundaries
    ("no way", ["no"], 1.0, 1.0, 0.0),            # HotpotQA: yes/no differ, so F1 is 0, not 2/3
    ("yes", ["Yes."], 1.0, 1.0, 1.0),
    (None, ["x"], 0.0, 0.0, 0.0),
])
def test_sub_em_beside_cover_em_and_the_yes_no_rule(answer, golds, sub, cover, f1):
    assert (sub_exact_match(answer, golds), cover_exact_match(answer, golds), token_f1(answer, golds)) == \
        (sub, cover, pytest.approx(f1))


def _episode(qid: str, answer: str | None, queries: list[str], **fields) -> Episode:
    return Episode(qid, 0, [1], actions=["search"] * len(queries) + ["answer"], queries=queries,
                   retrieved_ids=[[f"p{i}"] for i in range(len(queries))],
                   retrieved_titles=[[f"T{i}"] for i in range(len(queries))], answer=answer, finish="answer", **fields)


def test_a_reward_of_ones_own_by_import_path_gets_every_meta_and_its_weight():
    episodes = [_episode("a", "Tavrin", ["x", "y"]), _episode("a", "Tavrin", ["x"]), _episode("b", None, ["u", "v"])]
    weights = {"em": 1.0, "reward_plugins:searched_twice": 0.25}
    scores = score_episodes(episodes, {"a": ["tavrin"], "b": ["Voss"]}, weights, {"a": ["T0"]}, {"a": "2wiki"})
    np.testing.assert_array_equal(scores.weighted["reward_plugins:searched_twice"], [1.0, 0.0, 1.0])
    np.testing.assert_array_equal(scores.weighted["em"], [1.0, 1.0, 0.0])
    np.testing.assert_allclose(scores.rewards, [1.25, 1.0, 0.25])
    assert set(scores.select([2, 0]).weighted) == set(weights)
    np.testing.assert_allclose(scores.select([2, 0]).weighted["reward_plugins:searched_twice"], [1.0, 1.0])


@pytest.mark.parametrize("name, says", [
    ("reward_plugins:wrong_length", "reward 'reward_plugins:wrong_length' returned 4 scores for 3 episodes"),
    ("reward_plugins:not_finite", "reward 'reward_plugins:not_finite' returned nan for episode 2 (question 'b')"),
])
def test_a_reward_that_breaks_the_contract_is_one_line_naming_it(name, says):
    episodes = [_episode("a", "Tavrin", ["x"]), _episode("a", None, []), _episode("b", "Voss", ["y"])]
    with pytest.raises(RewardError) as refused:
        score_episodes(episodes, {"a": ["tavrin"], "b": ["Voss"]}, {"em": 1.0, name: 1.0})
    assert says in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize("override, says", [
    ("reward.weights.bleu=1", "reward.weights: unknown reward 'bleu' (built-ins: em, f1,"),
    ('reward.weights={"reward_plugin_broken:judge": 1}',
     "cannot import 'reward_plugin_broken' for reward 'reward_plugin_broken:judge': ModuleNotFoundError: "
     "No module named 'kr1_no_such_dependency'"),
    ('reward.weights={"reward_plugins:NOT_A_FUNCTION": 1}', "'reward_plugins' has no function 'NOT_A_FUNCTION'"),
    ("reward.f1_weight=1.0", "reward.weights and reward.f1_weight both set the rewards"),
    ("reward.weights={em: 0, answered_evidence: 0}", "reward.weights pays nothing"),
    ("reward.weights.em=inf", "bad value for 'reward.weights.em': inf"),
])
def test_a_reward_config_that_cannot_run_stops_at_load(override, says):
    with pytest.raises(ConfigError) as refused:
        load_config("default", [override])
    assert says in str(refused.value) and "\n" not in str(refused.value)


def test_a_reward_module_failing_without_text_is_named_by_its_error_type(tmp_path, monkeypatch):
    (tmp_path / "silent_reward.py").write_text("assert False  # a bare assert: an error with no text\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as refused:
        load_config("default", ['reward.weights={"silent_reward:judge": 1}'])
    assert str(refused.value).endswith("cannot import 'silent_reward' for reward 'silent_reward:judge': AssertionError")


def test_the_older_weight_keys_pay_what_they_paid(tmp_path):
    """A config of the *_weight keys gives the weights it gave before reward.weights existed."""
    assert RewardConfig().effective_weights() == {"em": 1.0}
    legacy = tmp_path / "legacy.yaml"
    legacy.write_text("reward:\n  em_weight: 1.0\n  f1_weight: 0.0\n  format_weight: 0.1\n"
                      "  answered_evidence_weight: 0.5\n")
    assert load_config(str(legacy)).reward.effective_weights() == {"em": 1.0, "format": 0.1, "answered_evidence": 0.5}
    assert load_config("default").reward.effective_weights() == {"em": 1.0, "answered_evidence": 0.5}
    # a weight of 0 in reward.weights keeps the reward in the logs, out of the sum
    cfg = load_config("default", ['reward.weights={"reward_plugins:searched_twice": 0}'])
    assert cfg.reward.effective_weights()["reward_plugins:searched_twice"] == 0.0
