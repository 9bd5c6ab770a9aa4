"""The benchmark table's figures on scripted answers, against EM, F1 and cover EM worked out by hand."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from kr1.rollout.rewards import cover_exact_match, score_episodes
from kr1.run.evaluation import model_labels
from kr1.run.metrics import BENCHMARK_COLUMNS, benchmark_table, episode_metrics


def _episode(qid, answer, searches=1, invalid=0, tokens=40):
    return SimpleNamespace(question_id=qid, answer=answer, num_invalid=invalid, turns=searches + 1,
                           num_searches=searches, generated_tokens=tokens, queries=["q"] * searches, empty_queries=0,
                           retrieved_titles=[])


GOLDS = {"q1": ["Zoë Ångström", "Zoe Angstrom"], "q2": ["Ærøskøbing"], "q3": ["1931"], "q4": ["Arlen Voss"]}
SCRIPTS = {
    # answer: EM, F1, cover EM (by hand)
    "nq": [_episode("q1", "zoe angstrom"),                                   # 1, 1, 1 (second alias)
           _episode("q2", "the town of Ærøskøbing", searches=2),             # 0, 1/2 (precision 1/3, recall 1), 1
           _episode("q3", None, searches=0, invalid=1, tokens=100)],         # 0, 0, 0 (never answered)
    "hotpotqa": [_episode("q4", "Voss"),                                     # 0, 2/3, 0 ("Voss" alone is not the gold)
                 _episode("q1", "Zoë Ångström", searches=3, tokens=60)],     # 1, 1, 1
}


@pytest.mark.parametrize("answer, golds, cover", [
    ("the town of Ærøskøbing", ["Ærøskøbing"], 1.0), ("Voss", ["Arlen Voss"], 0.0), ("Vossberg", ["Voss"], 0.0),
    ("It was 1931.", ["1931"], 1.0), (None, ["x"], 0.0), ("anything", ["the"], 0.0),
])
def test_cover_em_is_a_gold_alias_inside_the_answer_on_word_boundaries(answer, golds, cover):
    assert cover_exact_match(answer, golds) == cover


def test_the_table_shows_hand_computed_figures_and_the_unweighted_average():
    rows = []
    for name, episodes in SCRIPTS.items():
        scores = score_episodes(episodes, GOLDS, {"em": 1.0})
        rows.append((name, "warm", {**episode_metrics(episodes, scores), "n": float(len(episodes))}))
    lines = benchmark_table(rows).splitlines()
    assert lines[0].split("|")[1:-1] == [" benchmark ", " model "] + [f" {v} " for v in BENCHMARK_COLUMNS.values()]
    table = {cells[0]: [float(c) for c in cells[2:]]
             for cells in ([c.strip() for c in line.split("|")[1:-1]] for line in lines[2:])}
    em, f1, cover, sub, searches, turns, tokens, invalid, answered, n = range(10)
    nq, hotpot, average = table["nq"], table["hotpotqa"], table["average"]
    assert nq[em] == pytest.approx(100 / 3, abs=0.01) and nq[f1] == pytest.approx(100 * (1 + 1 / 2) / 3, abs=0.01)
    assert nq[cover] == pytest.approx(200 / 3, abs=0.01) and nq[sub] == nq[cover]
    assert nq[searches] == 1.0 and nq[turns] == 2.0
    assert nq[tokens] == pytest.approx(60.0) and nq[invalid] == pytest.approx(100 / 6, abs=0.01)  # 1 of 6 actions
    assert nq[answered] == pytest.approx(200 / 3, abs=0.01) and nq[n] == 3
    assert hotpot[em] == 50.0 and hotpot[f1] == pytest.approx(100 * (2 / 3 + 1) / 2, abs=0.01) and hotpot[cover] == 50
    assert average[em] == pytest.approx((100 / 3 + 50) / 2, abs=0.01) and average[n] == 5  # benchmarks weigh the same


def test_models_with_the_same_directory_name_are_told_apart():
    assert model_labels(["runs/a/step_10/policy", "runs/a/step_20/policy"]) == ["step_10/policy", "step_20/policy"]
    assert model_labels(["Qwen/Qwen2.5-3B-Instruct", "/ckpt/policy"]) == ["Qwen2.5-3B-Instruct", "policy"]
