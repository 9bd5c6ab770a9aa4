"""data.max_prompt_tokens: training questions whose prompt is longer are dropped once at start, with a count."""

from __future__ import annotations

import pytest

from kr1.config import load_config
from kr1.data import QARecord, load_questions
from kr1.errors import UserError
from kr1.rollout.episodes import new_episodes, prompt_lengths
from kr1.run.training_run import training_questions


@pytest.fixture(scope="module")
def tokenizer(untrained_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(untrained_model)  # the tiny model's own, trained on the world


@pytest.fixture(scope="module")
def train(world_dir) -> list[QARecord]:
    """40 training questions and one far longer than any (its id: "long")."""
    return load_questions(world_dir / "train.jsonl")[:40] + [QARecord("long", "Who is " * 200 + "it?", ["x"])]


def test_prompt_lengths_are_those_of_the_prompts_new_episodes_builds(tokenizer, train):
    for template in ("search_r1", "compact"):
        built = [len(e.prompt_ids) for e in new_episodes(train, tokenizer, 1, template)]
        assert prompt_lengths(train, tokenizer, template, chunk=7) == built  # batched across chunk edges


def test_questions_over_the_limit_are_dropped_by_id_and_counted(tokenizer, train, capsys):
    lengths = {e.question_id: len(e.prompt_ids) for e in new_episodes(train, tokenizer, 1, "compact")}
    limit = sorted(lengths.values())[len(lengths) // 2]  # the median: questions on both sides, some exactly at it
    over = {i for i, n in lengths.items() if n > limit}
    assert "long" in over and 1 < len(over) < len(train) and limit in lengths.values()
    cfg = load_config("default", [f"data.max_prompt_tokens={limit}"])  # the default's compact template
    kept = training_questions(cfg, train, tokenizer)
    assert [q.id for q in kept] == [q.id for q in train if q.id not in over]  # in order; at the limit is kept
    assert capsys.readouterr().err == (f"dropped {len(over)} of {len(train)} training questions longer than "
                                       f"data.max_prompt_tokens={limit} prompt tokens\n")
    assert training_questions(load_config("default"), train[:40], tokenizer) == train[:40]
    assert capsys.readouterr().err == ""  # nothing dropped: nothing said


def test_no_question_left_is_one_line(tokenizer, train):
    with pytest.raises(UserError) as err:
        training_questions(load_config("default", ["data.max_prompt_tokens=8"]), train, tokenizer)
    assert str(err.value) == ("all 41 training questions are longer than data.max_prompt_tokens=8 prompt tokens: "
                              "raise data.max_prompt_tokens (below rollout.max_total_tokens)")
