"""Reward functions: exact match, token F1, cover EM, sub-EM, format and evidence, weighted into one scalar per episode.

Each reward is a plain function `score(answers, golds, **meta) -> list[float]` (TRL's contract) where
`answers` are the episodes' final answers (None when an episode never answered) and
`golds` the accepted aliases per episode; the best alias counts. Normalisation is the
standard SQuAD one: lowercase, drop punctuation and the articles a/an/the, collapse spaces.
`meta` holds one list entry per episode under each of REWARD_META's names; a function takes the
ones it needs and `**meta` for the rest. A reward is named as a built-in (`em`) or by import path
(`my_pkg.rewards:judge`), and `reward.weights` maps names to weights:

    rewards, parts = combined_rewards(answers, golds, {"em": 1.0, "my_pkg.rewards:judge": 0.5},
                                      invalid_actions=[0, 2, ...], ...)
"""

from __future__ import annotations

import importlib
import math
import re
import string
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from kr1.errors import UserError, described, first_line

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)

RewardFn = Callable[..., list[float]]


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(answer: str | None, golds: Sequence[str]) -> float:
    if answer is None:
        return 0.0
    prediction = normalize_answer(answer)
    return float(any(prediction == normalize_answer(g) for g in golds))


def cover_exact_match(answer: str | None, golds: Sequence[str]) -> float:
    """1 when a normalised gold alias appears, on word boundaries, inside the normalised answer: kr1's cover EM,
    credit for a right answer said at length ("Voss" is not inside "Vossberg"). Not the published sub-EM."""
    if answer is None:
        return 0.0
    prediction = f" {normalize_answer(answer)} "
    return float(any(f" {g} " in prediction for g in map(normalize_answer, golds) if g))


def sub_exact_match(answer: str | None, golds: Sequence[str]) -> float:
    """1 when a normalised gold alias is a plain substring of the normalised answer, as Search-R1's
    `subem_check` and FlashRAG's sub-EM define it (so "voss" is inside "vossberg", and an alias that
    normalises to nothing is inside every answer)."""
    if answer is None:
        return 0.0
    prediction = normalize_answer(answer)
    return float(any(normalize_answer(g) in prediction for g in golds))


_CLOSED_ANSWERS = ("yes", "no", "noanswer")


def token_f1(answer: str | None, golds: Sequence[str]) -> float:
    """Token F1 against the best alias, with the official HotpotQA rule: when the normalised answer or alias is
    yes, no or noanswer and the two differ, F1 is 0 (no partial credit for "no" against "no way")."""
    if answer is None:
        return 0.0
    normalized = normalize_answer(answer)
    predicted = normalized.split()
    best = 0.0
    for gold in golds:
        expected_text = normalize_answer(gold)
        if (normalized in _CLOSED_ANSWERS or expected_text in _CLOSED_ANSWERS) and normalized != expected_text:
            continue
        expected = expected_text.split()
        common = sum((Counter(predicted) & Counter(expected)).values())
        if common:
            precision, recall = common / len(predicted), common / len(expected)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def em_reward(answers: Sequence[str | None], golds: Sequence[Sequence[str]], **meta: Any) -> list[float]:
    return [exact_match(a, g) for a, g in zip(answers, golds)]


def f1_reward(answers: Sequence[str | None], golds: Sequence[Sequence[str]], **meta: Any) -> list[float]:
    return [token_f1(a, g) for a, g in zip(answers, golds)]


def cover_em_reward(answers: Sequence[str | None], golds: Sequence[Sequence[str]], **meta: Any) -> list[float]:
    return [cover_exact_match(a, g) for a, g in zip(answers, golds)]


def sub_em_reward(answers: Sequence[str | None], golds: Sequence[Sequence[str]], **meta: Any) -> list[float]:
    return [sub_exact_match(a, g) for a, g in zip(answers, golds)]


def _title_key(title: str) -> str:
    return " ".join(title.casefold().split())


def evidence_recall(retrieved_titles: Sequence[Sequence[str]], supporting: Sequence[str]) -> float:
    """The share of the supporting passages among everything an episode retrieved (per query lists of titles),
    each passage counted once however often it came back; NaN for a question without supporting titles."""
    wanted = {_title_key(t) for t in supporting if t.strip()}
    if not wanted:
        return math.nan
    read = {_title_key(t) for hits in retrieved_titles for t in hits}
    return len(wanted & read) / len(wanted)


def evidence_reward(answers: Sequence[str | None], golds: Sequence[Sequence[str]], *,
                    retrieved_titles: Sequence[Sequence[Sequence[str]]], supporting_titles: Sequence[Sequence[str]],
                    **meta: Any) -> list[float]:
    """R1-Searcher's retrieval reward: evidence recall, 0 where the question names no supporting passage."""
    return [0.0 if math.isnan(r) else r for r in map(evidence_recall, retrieved_titles, supporting_titles)]


def answered_evidence_reward(answers: Sequence[str | None], golds: Sequence[Sequence[str]], *,
                             retrieved_titles: Sequence[Sequence[Sequence[str]]],
                             supporting_titles: Sequence[Sequence[str]], **meta: Any) -> list[float]:
    """Evidence recall for episodes that end with an answer, 0 for the rest: searching on without ever
    answering earns nothing (the plain evidence reward pays a policy that searches until its turns run out)."""
    recall = evidence_reward(answers, golds, retrieved_titles=retrieved_titles, supporting_titles=supporting_titles)
    return [r if a is not None else 0.0 for r, a in zip(recall, answers)]


def format_reward(answers: Sequence[str | None], golds: Sequence[Sequence[str]], *,
                  invalid_actions: Sequence[int], **meta: Any) -> list[float]:
    """1 for an episode that ended with a well-formed answer and no invalid action, else 0."""
    return [float(a is not None and n == 0) for a, n in zip(answers, invalid_actions)]


REWARD_FUNCTIONS: dict[str, RewardFn] = {"em": em_reward, "f1": f1_reward, "cover_em": cover_em_reward,
                                         "sub_em": sub_em_reward,
                                         "format": format_reward, "evidence": evidence_reward,
                                         "answered_evidence": answered_evidence_reward}
# what every reward function gets as keyword arguments, one entry per episode
REWARD_META = ("question_ids", "dataset", "turns", "actions", "queries", "retrieved_ids", "retrieved_titles",
               "supporting_titles", "invalid_actions")
LOGGED_REWARDS = ("em", "f1", "cover_em", "sub_em")  # computed for the metrics whatever the weights


class RewardError(UserError):
    """A reward that cannot be found, imported or trusted (wrong length, non-finite value): one line naming it."""


def resolve_reward(name: str) -> RewardFn:
    """A built-in reward by name, or a function by import path `package.module:function`."""
    if name in REWARD_FUNCTIONS:
        return REWARD_FUNCTIONS[name]
    module, colon, attribute = name.partition(":")
    if not colon or not module or not attribute:
        raise RewardError(f"reward.weights: unknown reward {name!r} (built-ins: {', '.join(REWARD_FUNCTIONS)}; "
                          "a function of your own by import path, 'package.module:function')")
    try:
        found = importlib.import_module(module)
    except Exception as e:  # the user's module failed to import: its own error, on one line
        raise RewardError(f"reward.weights: cannot import {module!r} for reward {name!r}: "
                          f"{described(e)}") from None
    fn = getattr(found, attribute, None)
    if not callable(fn):
        raise RewardError(f"reward.weights: {module!r} has no function {attribute!r} (reward {name!r})")
    return fn


def _checked(name: str, values: Any, question_ids: Sequence[str]) -> list[float]:
    """A reward's scores as floats, one per episode, all finite, else a RewardError naming the reward."""
    try:
        scores = np.asarray(list(values), dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise RewardError(f"reward {name!r} returned {type(values).__name__}, not a list of numbers "
                          f"({first_line(e)})") from None
    if scores.shape != (len(question_ids),):
        raise RewardError(f"reward {name!r} returned {scores.size} scores for {len(question_ids)} episodes "
                          "(one float per episode)")
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        i = int(bad[0])
        raise RewardError(f"reward {name!r} returned {scores[i]} for episode {i} (question {question_ids[i]!r}): "
                          "rewards must be finite")
    return scores.tolist()


def combined_rewards(answers: Sequence[str | None], golds: Sequence[Sequence[str]], weights: Mapping[str, float],
                     **meta: Any) -> tuple[list[float], dict[str, list[float]]]:
    """Weighted sum of the named rewards, and each part (EM, F1, cover EM and sub-EM always, for logging)."""
    functions = {name: resolve_reward(name) for name in weights}
    ids = meta.get("question_ids") or [str(i) for i in range(len(answers))]
    names = list(weights) + [n for n in LOGGED_REWARDS if n not in weights]
    parts = {name: _checked(name, functions.get(name, REWARD_FUNCTIONS.get(name))(answers, golds, **meta), ids)
             for name in names}
    total = [sum(weights.get(name, 0.0) * parts[name][i] for name in names) for i in range(len(answers))]
    return total, parts


@dataclass
class EpisodeScores:
    """Rewards of a batch of episodes and the parts they were made of."""

    rewards: np.ndarray  # (B,) float32 weighted sum
    em: np.ndarray  # (B,) float32 exact match against the best alias
    f1: np.ndarray  # (B,) float32 token F1 against the best alias
    format: np.ndarray  # (B,) float32 1 = answered with no invalid action
    cover_em: np.ndarray  # (B,) float32 a gold alias inside the answer, on word boundaries (kr1's cover EM)
    sub_em: np.ndarray  # (B,) float32 a gold alias a substring of the answer (Search-R1's and FlashRAG's sub-EM)
    evidence: np.ndarray  # (B,) float32 supporting passages retrieved, as a share; NaN without supporting titles
    # each weighted reward's own scores, by its name in reward.weights (logged as reward/<name>)
    weighted: dict[str, np.ndarray] = field(default_factory=dict)

    def select(self, rows: Sequence[int]) -> "EpisodeScores":
        """The scores of these episodes, in this order."""
        rows = np.asarray(rows, dtype=np.int64)
        return EpisodeScores(**{f.name: getattr(self, f.name)[rows] for f in fields(self) if f.name != "weighted"},
                             weighted={name: values[rows] for name, values in self.weighted.items()})

    @staticmethod
    def concat(parts: Sequence["EpisodeScores"]) -> "EpisodeScores":
        return EpisodeScores(**{f.name: np.concatenate([getattr(p, f.name) for p in parts])
                                for f in fields(EpisodeScores) if f.name != "weighted"},
                             weighted={name: np.concatenate([p.weighted[name] for p in parts])
                                       for name in (parts[0].weighted if parts else {})})


def informative_groups(question_ids: Sequence[str], rewards: np.ndarray) -> list[list[int]]:
    """Row indices of each question's episodes, for the questions whose samples' rewards differ (the groups
    that carry a GRPO signal), in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, question in enumerate(question_ids):
        groups.setdefault(question, []).append(i)
    return [rows for rows in groups.values() if np.ptp(rewards[rows]) > 1e-6]


def score_episodes(episodes: Sequence[Any], golds: Mapping[str, Sequence[str]], weights: Mapping[str, float],
                   supporting: Mapping[str, Sequence[str]] | None = None,
                   datasets: Mapping[str, str] | None = None) -> EpisodeScores:
    """Score episodes (anything with `question_id`, `answer`, `num_invalid`, `retrieved_titles`, ...) against gold
    aliases and, for the evidence reward, each question's supporting titles; `datasets` names each question's
    benchmark for rewards that score them apart."""
    missing = {e.question_id for e in episodes} - set(golds)
    if missing:
        raise KeyError(f"no gold answers for question(s) {sorted(missing)[:5]}")
    answers = [e.answer for e in episodes]
    read = [getattr(e, "retrieved_titles", []) for e in episodes]
    needed = [(supporting or {}).get(e.question_id, []) for e in episodes]
    actions = [list(getattr(e, "actions", [])) for e in episodes]
    meta = {"question_ids": [e.question_id for e in episodes],
            "dataset": [(datasets or {}).get(e.question_id, "") for e in episodes],
            "turns": [len(a) for a in actions], "actions": actions,
            "queries": [list(getattr(e, "queries", [])) for e in episodes],
            "retrieved_ids": [getattr(e, "retrieved_ids", []) for e in episodes], "retrieved_titles": read,
            "supporting_titles": needed, "invalid_actions": [e.num_invalid for e in episodes]}
    total, parts = combined_rewards(answers, [golds[e.question_id] for e in episodes],
                                    {"format": 0.0, **weights}, **meta)
    as_array = lambda values: np.asarray(values, dtype=np.float32)  # noqa: E731
    return EpisodeScores(as_array(total), as_array(parts["em"]), as_array(parts["f1"]), as_array(parts["format"]),
                         as_array(parts["cover_em"]), as_array(parts["sub_em"]),
                         as_array(list(map(evidence_recall, read, needed))),
                         weighted={name: as_array(parts[name]) for name in weights})
