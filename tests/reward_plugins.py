"""Reward functions of a user's own, named by import path in the tests (`reward_plugins:searched_twice`):
TRL's contract, `fn(answers, golds, **meta) -> list[float]`, and a few that break it."""

from __future__ import annotations

import math
from typing import Any, Sequence


def searched_twice(answers: Sequence[str | None], golds: Sequence[Sequence[str]], *, question_ids: list[str],
                   dataset: list[str], turns: list[int], actions: list[list[str]], queries: list[list[str]],
                   retrieved_ids: list[list[list[str]]], retrieved_titles: list[list[list[str]]],
                   supporting_titles: list[list[str]], invalid_actions: list[int], **meta: Any) -> list[float]:
    """1 for an episode that searched at least twice and read something each time (every meta name is taken by
    keyword, so a missing one fails the call)."""
    lists = (question_ids, dataset, turns, actions, queries, retrieved_ids, retrieved_titles, supporting_titles,
             invalid_actions)
    assert all(len(values) == len(answers) for values in lists), "one meta entry per episode"
    return [float(len(q) >= 2 and all(ids) and n >= len(q)) for q, ids, n in zip(queries, retrieved_ids, turns)]


def wrong_length(answers: Sequence[str | None], golds: Sequence[Sequence[str]], **meta: Any) -> list[float]:
    return [0.0] * (len(answers) + 1)


def not_finite(answers: Sequence[str | None], golds: Sequence[Sequence[str]], **meta: Any) -> list[float]:
    return [0.0] * (len(answers) - 1) + [math.nan]


NOT_A_FUNCTION = 1.0
