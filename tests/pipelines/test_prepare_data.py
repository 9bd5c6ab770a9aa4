"""`python -m pipelines.prepare_data`: local files and hub-style datasets to parquet, a bad row writes nothing."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kr1.data import DataError, load_questions
from kr1.two_wiki import prepare
from pipelines.prepare_data import main as prepare_main

GOOD = {"id": "q1", "problem": "Who directed The Amber Lantern?", "golden_answers": ["Arlen Voss", "A. Voss"]}


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


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
