"""`python -m kr1.coverage`: the synthetic world is covered by construction; a hand-made corpus missing some
titles is measured exactly; `prepare_corpus --add-train-paragraphs` adds the training split's missing
passages, and only those."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from kr1.coverage import audit
from kr1.data import QARecord, load_corpus
from kr1.retrieval.corpus_file import meta_path, verify_corpus
from kr1.retrieval.coverage import coverage_rows, coverage_table, title_key
from kr1.rollout.rewards import evidence_recall
from kr1.run.index_build import build_index
from pipelines.prepare_corpus import main as prepare_main


def _passage(i: int, title: str) -> dict:
    return {"id": str(i), "contents": f'"{title}"\n{title} is a passage of the hand-made corpus.'}


INDEXED = ["Arlen Voss", "The Amber Lantern", "Mira  Holt", "Port Ellery"]  # two spaces: matched collapsed
QUESTIONS = [  # dataset, type, supporting titles
    ("hotpotqa", "bridge", ["Arlen Voss", "The Amber Lantern"]),  # covered
    ("hotpotqa", "bridge", ["arlen voss", "Quill Harbour"]),  # half: case-folded match, one missing
    ("hotpotqa", "comparison", ["Mira Holt", "Port Ellery"]),  # covered
    ("musique", "", ["Quill Harbour", "Stone Reach", "Port Ellery"]),  # one of three
    ("nq", "", []),  # no supporting titles: counted apart
]


def _records() -> list[QARecord]:
    return [QARecord(f"q{i}", "question?", ["answer"], qtype, titles, dataset)
            for i, (dataset, qtype, titles) in enumerate(QUESTIONS)]


def test_titles_match_as_the_evidence_reward_matches_them():
    titles = ["Arlen Voss", "  arlen\tVOSS ", "arlen vos", "Straße", "STRASSE", "Σίσυφος", "ΣΊΣΥΦΟΣ",
              "a  b\u00a0c", "a b c"]
    for needed in titles:
        for read in titles:
            matched = evidence_recall([[read]], [needed]) == 1.0
            assert matched == (title_key(read) == title_key(needed)), (read, needed)


def test_shares_per_dataset_and_type_on_a_hand_made_corpus():
    present = {title_key(t) for t in INDEXED}
    rows = {(r.dataset, r.type): r for r in coverage_rows(_records(), present, sample=5)}
    assert set(rows) == {("hotpotqa", "bridge"), ("hotpotqa", "comparison"), ("hotpotqa", "all"), ("musique", ""),
                         ("nq", "")}
    bridge, everything, musique, nq = (rows[k] for k in [("hotpotqa", "bridge"), ("hotpotqa", "all"),
                                                          ("musique", ""), ("nq", "")])
    assert (bridge.questions, bridge.covered, bridge.titles, bridge.found) == (2, 1, 4, 3)
    assert bridge.missing == ["Quill Harbour"]
    assert (everything.question_share, everything.title_share) == (2 / 3, 5 / 6)
    assert (musique.covered, musique.found, musique.titles) == (0, 1, 3)
    assert musique.missing == ["Quill Harbour", "Stone Reach"]
    assert (nq.questions, nq.without_titles) == (0, 1) and nq.question_share != nq.question_share  # NaN
    table = coverage_table(list(rows.values()))
    assert "| hotpotqa | bridge | 2 | 50.0 % | 75.0 % (3/4) | 0 | Quill Harbour |" in table
    assert "| nq | - | 0 | - | - (0/0) | 1 |  |" in table


def test_synthetic_world_is_fully_covered(index_factory, world_dir, tmp_path):
    rows = audit(index_factory(2), [world_dir / "train.jsonl", world_dir / "dev.jsonl", world_dir / "test.jsonl"])
    assert {r.dataset for r in rows} == {"train", "dev", "test"}
    for row in rows:
        assert row.questions > 0 and row.covered == row.questions and row.found == row.titles and not row.missing
    run = subprocess.run([sys.executable, "-m", "kr1.coverage", "--index", str(index_factory(2)), "--questions",
                          str(world_dir / "dev.jsonl"), "--out", str(tmp_path / "cov.json")],
                         capture_output=True, text=True, check=True)
    assert re.search(r"\| dev \| all \| 133 \| 100\.0 % \| 100\.0 % \((\d+)/\1\) \| 0 \|  \|", run.stdout)
    assert all(r["question_share"] == 1.0 for r in json.loads((tmp_path / "cov.json").read_text()))


def _flashrag_file(path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _hotpot_row(i: int, titles: list[str], with_text: bool = True) -> dict:
    context = {"title": titles, "sentences": [[f"{t} lies on the coast.", " It has a harbour."] for t in titles]}
    return {"id": str(i), "question": f"Where is {titles[-1]}?", "golden_answers": ["the coast"],
            "metadata": {"type": "bridge", "supporting_facts": {"title": titles, "sent_id": [0] * len(titles)},
                         **({"context": context} if with_text else {})}}


def _musique_row(i: int, titles: list[str]) -> dict:
    return {"id": str(i), "question": "Which?", "golden_answers": ["x"], "metadata": {"paragraphs": [
        {"title": t, "paragraph_text": f"{t} is a town.", "is_supporting": True} for t in titles] + [
        {"title": "Unrelated Distractor", "paragraph_text": "Not needed.", "is_supporting": False}]}}


def test_train_paragraphs_added_never_dev_ones(ray_session, tmp_path, capsys):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(_passage(i, t)) + "\n" for i, t in enumerate(INDEXED)))
    flashrag = tmp_path / "flashrag"
    _flashrag_file(flashrag / "hotpotqa" / "train.jsonl", [
        _hotpot_row(0, ["Arlen Voss", "Quill Harbour"]), _hotpot_row(1, ["quill harbour", "Stone Reach"]),
        _hotpot_row(2, ["Lost Title"], with_text=False)])
    _flashrag_file(flashrag / "hotpotqa" / "dev.jsonl", [_hotpot_row(0, ["Port Ellery", "Dev Only Town"])])
    _flashrag_file(flashrag / "musique" / "train.jsonl", [_musique_row(0, ["Stone Reach", "Marrow Fen"])])
    fixed = tmp_path / "fixed.jsonl"
    prepare_main(["--out", str(fixed), "--source", str(corpus), "--add-train-paragraphs", "hotpotqa,musique",
                  "--benchmarks", str(flashrag)])
    assert "added training paragraphs: {'hotpotqa': 2, 'musique': 1}" in capsys.readouterr().out
    passages = load_corpus(fixed)
    assert [p.title for p in passages] == INDEXED + ["Quill Harbour", "Stone Reach", "Marrow Fen"]
    assert passages[4].id == "kr1-train-hotpotqa-0"
    assert passages[4].text == "Quill Harbour lies on the coast. It has a harbour."
    assert passages[6].text == "Marrow Fen is a town."
    record = verify_corpus(fixed)
    assert record["rows"] == 7 and record["train_paragraphs"]["missing_without_paragraph"] == 1
    assert record["train_paragraphs"]["split"] == "train"

    from kr1.benchmarks import prepare_benchmarks  # the questions as kr1.eval reads them
    prepare_benchmarks(tmp_path / "bench", ["hotpotqa"], str(flashrag), train=["hotpotqa"])
    questions = [tmp_path / "bench" / "hotpotqa" / f"{split}.parquet" for split in ("train", "dev")]
    for name, source in (("before", corpus), ("after", fixed)):
        build_index(source, tmp_path / name, 1, progress=False)
    before, after = ({r.dataset: r for r in audit(tmp_path / name, questions)} for name in ("before", "after"))
    assert (before["hotpotqa/train"].covered, after["hotpotqa/train"].covered) == (0, 2)  # row 2's has no text
    assert after["hotpotqa/train"].missing == ["Lost Title"]
    assert before["hotpotqa/dev"].missing == after["hotpotqa/dev"].missing == ["Dev Only Town"]


def test_unknown_benchmark_for_train_paragraphs_is_one_line(tmp_path):
    run = subprocess.run([sys.executable, "-m", "pipelines.prepare_corpus", "--out", str(tmp_path / "o.jsonl"),
                          "--source", str(tmp_path), "--add-train-paragraphs", "bamboogle",
                          "--benchmarks", str(tmp_path)], capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.strip().count("\n") == 0
    assert "bamboogle" in run.stderr and "those with a train split" in run.stderr
    assert not meta_path(tmp_path / "o.jsonl").exists()


@pytest.mark.parametrize("args, message", [
    (["--index", "{tmp}/none", "--questions", "{world}/dev.jsonl"], "index directory not found"),
    (["--index", "{index}", "--questions", "{tmp}/none.jsonl"], "question file not found"),
])
def test_coverage_errors_are_one_line(args, message, index_factory, world_dir, tmp_path):
    filled = [a.format(tmp=tmp_path, world=world_dir, index=index_factory(2)) for a in args]
    run = subprocess.run([sys.executable, "-m", "kr1.coverage", *filled], capture_output=True, text=True)
    assert run.returncode == 2 and message in run.stderr and run.stderr.strip().count("\n") == 0
