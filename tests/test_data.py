"""Question and corpus files: both layouts read, and every bad row is named precisely."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kr1.config import ConfigError, load_config
from kr1.data import DataError, load_corpus, load_question_files, load_questions
from kr1.training.prompt_loader import PromptLoader

GOOD = {"id": "q1", "problem": "Who directed The Amber Lantern?", "golden_answers": ["Arlen Voss", "A. Voss"]}


def _jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_jsonl_and_parquet_read_the_same(tmp_path):
    rows = [{**GOOD, "type": "", "supporting_titles": []},
            {**GOOD, "id": "q2", "type": "comparison", "supporting_titles": ["A", "B"]}]
    from_jsonl = load_questions(_jsonl(tmp_path / "q.jsonl", rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "q.parquet")
    from_parquet = load_questions(tmp_path / "q.parquet")
    assert from_jsonl == from_parquet
    assert from_jsonl[0].golden_answers == ["Arlen Voss", "A. Voss"]


@pytest.mark.parametrize("bad_row, message", [
    ({"id": "x", "golden_answers": ["a"]}, "row 2: missing field 'problem'"),
    ({"id": "x", "problem": "  ", "golden_answers": ["a"]}, "row 2: field 'problem' must be a non-empty string"),
    ({"id": "x", "problem": "q?"}, "row 2: missing field 'golden_answers'"),
    ({"id": "x", "problem": "q?", "golden_answers": []}, "row 2: field 'golden_answers' has no non-empty answer"),
    ({"id": "x", "problem": "q?", "golden_answers": ["", " "]}, "row 2: field 'golden_answers' has no non-empty"),
    ({"id": "x", "problem": "q?", "golden_answers": "a"}, "row 2: field 'golden_answers' must be a list"),
    ({"id": "x", "problem": "q?", "golden_answers": [3]}, "row 2: field 'golden_answers' holds a int"),
    ({"id": "q1", "problem": "q?", "golden_answers": ["a"]}, "row 2: field 'id' 'q1' repeats row 1"),
    ({"id": "x", "problem": "q?", "golden_answers": ["a"], "type": "riddle"}, "row 2: field 'type'"),
    ("{not json", "row 2: not valid JSON"),
    ("[1, 2]", "row 2: expected a JSON object"),
])
def test_bad_jsonl_row_names_file_row_and_field(tmp_path, bad_row, message):
    path = _jsonl(tmp_path / "q.jsonl", [GOOD, bad_row])
    with pytest.raises(DataError) as err:
        load_questions(path)
    assert str(path) in str(err.value) and message in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_parquet_row_names_row(tmp_path):
    rows = [GOOD, {**GOOD, "id": "q2", "golden_answers": []}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "q.parquet")
    with pytest.raises(DataError, match=r"q\.parquet: row 2: field 'golden_answers'"):
        load_questions(tmp_path / "q.parquet")


def test_missing_and_empty_question_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_questions(tmp_path / "none.jsonl")
    with pytest.raises(DataError, match="no questions"):
        load_questions(_jsonl(tmp_path / "empty.jsonl", []))


def test_corpus_layouts(tmp_path):
    rows = [{"id": 0, "contents": '"Arlen Voss"\nArlen Voss is an architect.'},
            {"id": "1", "title": "Tavrin", "text": "Tavrin is a city."}]
    path = tmp_path / "wiki.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    passages = load_corpus(path)
    assert [(p.id, p.title, p.text) for p in passages] == [
        ("0", "Arlen Voss", "Arlen Voss is an architect."), ("1", "Tavrin", "Tavrin is a city.")]
    assert passages[0].contents == "Arlen Voss\nArlen Voss is an architect."


@pytest.mark.parametrize("bad_row, message", [
    ({"title": "t", "text": "x"}, "row 2: missing field 'id'"),
    ({"id": "9", "title": "t"}, "row 2: missing field 'text'"),
    ({"id": "9", "contents": 5}, "row 2: field 'contents' must be a string"),
    ({"id": "9", "title": "", "text": " "}, "row 2: passage is empty"),
    ({"id": "0", "text": "again"}, "row 2: field 'id' '0' is repeated"),
])
def test_bad_corpus_row(tmp_path, bad_row, message):
    path = _jsonl(tmp_path / "c.jsonl", [{"id": "0", "text": "fine"}, bad_row])
    with pytest.raises(DataError, match=message):
        load_corpus(path)


def test_empty_corpus(tmp_path):
    with pytest.raises(DataError, match="corpus is empty"):
        load_corpus(_jsonl(tmp_path / "c.jsonl", []))


def test_a_mixture_reads_its_files_in_order_and_shuffles_them_together_by_seed(tmp_path):
    files = []
    for name in ("nq", "hotpotqa"):
        files.append(tmp_path / f"{name}.jsonl")
        files[-1].write_text("".join(json.dumps({"id": f"{name}-{i}", "problem": f"q{i}?", "golden_answers": ["a"],
                                                 "dataset": name}) + "\n" for i in range(6)))
    mixture = load_question_files(files)
    assert [q.id for q in mixture] == [f"nq-{i}" for i in range(6)] + [f"hotpotqa-{i}" for i in range(6)]
    first, again = PromptLoader(mixture, per_step=4, seed=3), PromptLoader(load_question_files(files), 4, 3)
    steps = [[q.id for q in first.batch(s)] for s in range(3)]
    assert steps == [[q.id for q in again.batch(s)] for s in range(3)]  # a resumed run reads the same
    assert sorted(sum(steps, [])) == sorted(q.id for q in mixture)  # one epoch: every question once
    assert {q.dataset for q in first.batch(0) + first.batch(1)} == {"nq", "hotpotqa"}
    clash = tmp_path / "clash.jsonl"
    clash.write_text(json.dumps({"id": "nq-2", "problem": "q?", "golden_answers": ["a"]}) + "\n")
    with pytest.raises(DataError, match=f"^{clash}: field 'id' 'nq-2' is also in {files[0]}"):
        load_question_files([*files, clash])


@pytest.mark.parametrize("value", ["[]", "[a.jsonl,3]", "{a: 1}"])
def test_train_path_is_one_file_or_a_list_of_files(value):
    assert load_config("default", ["data.train_path=[a.jsonl,b.parquet]"]).data.train_path == ["a.jsonl", "b.parquet"]
    with pytest.raises(ConfigError, match="bad value for 'data.train_path'"):
        load_config("default", [f"data.train_path={value}"])


def test_prompt_loader_reads_what_one_permutation_per_position_read():
    """The per-epoch cache changes no question: steps across epoch boundaries (and a step longer than an epoch,
    and steps read out of order, as resume and the async queue do) equal the original formula, which drew the
    epoch's permutation for every prompt."""
    import numpy as np

    from kr1.data import QARecord

    questions = [QARecord(f"q{i}", f"question {i}?", ["a"]) for i in range(10)]

    def before(loader, step):  # the formula the loader used before the cache
        out = []
        for position in range(step * loader.per_step, (step + 1) * loader.per_step):
            epoch, offset = divmod(position, len(questions))
            order = np.random.default_rng([loader.seed, epoch]).permutation(len(questions))
            out.append(questions[int(order[offset])])
        return out

    for per_step, seed in ((4, 0), (3, 7), (10, 1), (25, 2)):
        loader = PromptLoader(questions, per_step, seed)
        for step in [*range(12), 3, 0, 40, 2]:
            assert loader.batch(step) == before(loader, step), (per_step, seed, step)
            assert len(loader._orders) <= 2
