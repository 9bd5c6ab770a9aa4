"""The README's recipe table is true to the bundled recipes: every kr1 key's cell is the recipe's value."""

from __future__ import annotations

from pathlib import Path

import pytest

from kr1.config import load_config

README = Path(__file__).resolve().parents[1] / "README.md"
RECIPES = ("2wiki_qwen2.5_1.5b_instruct", "2wiki_qwen2.5_7b_instruct", "nq_hotpotqa_qwen2.5_3b_instruct")


def recipe_table() -> list[list[str]]:
    """The rows of the table under "The recipes beside Search-R1's script", cells stripped."""
    text = README.read_text().split("**The recipes beside Search-R1's script, key by key.**", 1)[1]
    rows = [line for line in text.split("\n\n", 2)[1].splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


def test_the_table_covers_search_r1s_keys():
    keys = [row[2].strip("`") for row in recipe_table()]
    for key in ("trainer.prompts_per_step", "rollout.n_samples", "learner.lr", "learner.lr_warmup_ratio",
                "learner.mini_batches", "algorithm.kl_coef", "algorithm.kl_estimator", "rollout.temperature",
                "rollout.max_turns", "retriever.top_k", "rollout.max_new_tokens_per_turn"):
        assert key in keys


@pytest.mark.parametrize("column, recipe", enumerate(RECIPES, start=3))
def test_each_recipe_has_the_tables_values(column, recipe):
    cfg = load_config(recipe)
    for row in recipe_table():
        section, name = row[2].strip("`").split(".")
        value = getattr(getattr(cfg, section), name)
        cell = row[column]
        assert (float(cell) == value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
            else str(value) == cell, f"{recipe}: {row[2]} is {value!r}, the README says {cell}"
