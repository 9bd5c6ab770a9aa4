"""Question and corpus files: both layouts read, and every bad row is named precisely."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kr1.data import DataError, load_corpus, load_questions
from pipelines.prepare_data import main as prepare_main
from pipelines.prepare_data import prepare

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


def test_prepare_local_files_writes_parquet_and_carves_dev(tmp_path):
    train = _jsonl(tmp_path / "train.jsonl", [{**GOOD, "id": f"t{i}"} for i in range(10)])
    test = _jsonl(tmp_path / "test.jsonl", [GOOD])
    counts = prepare(tmp_path / "out", files={"train": train, "test": test}, dev_size=3, seed=0)
    assert counts == {"train": 7, "test": 1, "dev": 3}
    dev = load_questions(tmp_path / "out" / "dev.parquet")
    train_out = load_questions(tmp_path / "out" / "train.parquet")
    assert not {q.id for q in dev} & {q.id for q in train_out}
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["counts"] == counts


def test_prepare_bad_row_writes_nothing(tmp_path, capsys):
    train = _jsonl(tmp_path / "train.jsonl", [GOOD, {"id": "b", "problem": "q", "golden_answers": []}])
    with pytest.raises(DataError, match=r"train\.jsonl: row 2: field 'golden_answers'"):
        prepare_main(["--out", str(tmp_path / "out"), "--train", str(train)])
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out*")), "a partial output was left behind"


def test_prepare_from_hub_offline_fails_with_one_line(tmp_path):
    with pytest.raises(DataError) as err:
        prepare(tmp_path / "out", hub_id="hzy/kr1_2wiki")
    assert "hzy/kr1_2wiki" in str(err.value) and "\n" not in str(err.value)


def test_prepare_from_a_local_hub_style_dataset(tmp_path, monkeypatch):
    """The hub path validates `datasets` rows; a local parquet dataset stands in for the hub here."""
    import datasets

    rows = [{"problem": f"q{i}?", "golden_answers": [f"a{i}"]} for i in range(6)]
    data_dir = tmp_path / "hub"
    data_dir.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), data_dir / "train.parquet")
    pq.write_table(pa.Table.from_pylist(rows[:2]), data_dir / "test.parquet")
    real = datasets.load_dataset
    monkeypatch.setattr(datasets, "load_dataset", lambda hub_id: real("parquet", data_files={
        "train": str(data_dir / "train.parquet"), "test": str(data_dir / "test.parquet")}))
    counts = prepare(tmp_path / "out", hub_id="hzy/kr1_2wiki", dev_size=2)
    assert counts == {"train": 4, "test": 2, "dev": 2}
    assert load_questions(tmp_path / "out" / "test.parquet")[0].problem == "q0?"
