"""`python -m pipelines.prepare_benchmarks`: the seven benchmarks in FlashRAG's layout, read through
`datasets` as the hub path reads them, to kr1 questions; a bad row names its file, row and field."""

from __future__ import annotations

import json
import shutil

import pytest

from kr1.benchmarks import EVAL_SPLITS, prepare_benchmarks
from kr1.data import DataError, load_question_files, load_questions
from kr1.world.flashrag_files import synthetic_benchmarks
from pipelines.prepare_benchmarks import main

# each benchmark's metadata as FlashRAG ships it: none, HotpotQA's and 2Wiki's supporting facts (as a
# {title, sent_id} table or as [title, sentence] pairs), Musique's paragraphs
METADATA = {
    "nq": {}, "triviaqa": {}, "popqa": {"s_wiki_title": "Zoë Ångström"}, "bamboogle": {},
    "hotpotqa": {"type": "bridge", "level": "hard",
                 "supporting_facts": {"title": ["Ærøskøbing", "Zoë Ångström"], "sent_id": [0, 2]}},
    "2wikimultihopqa": {"type": "compositional", "supporting_facts": [["Ærøskøbing", 0], ["Zoë Ångström", 1]]},
    "musique": {"answerable": True, "paragraphs": [{"idx": 0, "title": "Ærøskøbing", "is_supporting": True},
                                                   {"idx": 1, "title": "Elsewhere", "is_supporting": False},
                                                   {"idx": 2, "title": "Zoë Ångström", "is_supporting": True}]},
}
TITLES = {"hotpotqa": ["Ærøskøbing", "Zoë Ångström"], "2wikimultihopqa": ["Ærøskøbing", "Zoë Ångström"],
          "musique": ["Ærøskøbing", "Zoë Ångström"]}
# one bad row per file: what a hand-edited or truncated export holds
BAD_ROWS = {
    "nq": ({"id": "test_3", "question": "", "golden_answers": ["x"]}, "field 'question' must be a non-empty string"),
    "triviaqa": ({"id": "test_3", "question": "Who?"}, "missing field 'golden_answers'"),
    "popqa": ({"id": "test_3", "question": "Who?", "golden_answers": "Zoë"}, "field 'golden_answers' must be a list"),
    "hotpotqa": ({"id": "test_3", "question": "Who?", "golden_answers": ["", " "]}, "has no non-empty answer"),
    "2wikimultihopqa": ({"id": "test_3", "question": "Who?", "golden_answers": ["x"], "metadata": [1, 2]},
                        "field 'metadata' must be an object"),
    "musique": ({"id": "test_0", "question": "Who?", "golden_answers": ["x"]},
                "field 'id' 'musique-test_0' repeats row 1"),
    "bamboogle": ({"id": "test_3", "golden_answers": ["x"]}, "missing field 'question'"),
}


def _write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture(scope="module")
def flashrag_dir(tmp_path_factory):
    """Three questions per benchmark in FlashRAG's layout (`<name>/<split>.jsonl`), plus NQ's and HotpotQA's
    train splits: unicode, several aliases, ids that repeat across benchmarks as FlashRAG's do."""
    root = tmp_path_factory.mktemp("flashrag")
    for name, split in EVAL_SPLITS.items():
        rows = [{"id": f"test_{i}", "question": f"Where was Zoë Ångström's {i}th painting shown?",
                 "golden_answers": ["Ærøskøbing", "Aeroskobing", "Ærø"], "metadata": METADATA[name]} for i in range(3)]
        _write(root / name / f"{split}.jsonl", rows)
    for name in ("nq", "hotpotqa"):
        _write(root / name / "train.jsonl", [{"id": f"train_{i}", "question": f"q{i}?", "golden_answers": [f"a{i}"],
                                              "metadata": METADATA[name]} for i in range(5)])
    return root


def test_each_benchmark_keeps_its_evaluation_split_aliases_titles_and_unique_ids(flashrag_dir, tmp_path):
    out = tmp_path / "benchmarks"
    counts = prepare_benchmarks(out, source=str(flashrag_dir), train=["nq", "hotpotqa"])
    assert counts == {**{name: {split: 3} for name, split in EVAL_SPLITS.items()},
                      "nq": {"test": 3, "train": 5}, "hotpotqa": {"dev": 3, "train": 5}}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["benchmarks"]["musique"] == {"eval_split": "dev", "counts": {"dev": 3}}
    assert manifest["benchmarks"]["popqa"]["eval_split"] == "test"
    for name, split in EVAL_SPLITS.items():
        rows = load_questions(out / name / f"{split}.parquet")
        assert [r.id for r in rows] == [f"{name}-test_{i}" for i in range(3)]
        assert rows[1].problem == "Where was Zoë Ångström's 1th painting shown?"
        assert rows[0].golden_answers == ["Ærøskøbing", "Aeroskobing", "Ærø"] and rows[0].dataset == name
        assert rows[0].supporting_titles == TITLES.get(name, [])
    assert load_questions(out / "hotpotqa" / "dev.parquet")[0].type == "bridge"
    assert load_questions(out / "2wikimultihopqa" / "dev.parquet")[0].type == "compositional"
    # the training mixture reads as one list: ids stay unique across benchmarks
    mixture = load_question_files([out / "nq" / "train.parquet", out / "hotpotqa" / "train.parquet"])
    assert len(mixture) == 10 and {q.dataset for q in mixture} == {"nq", "hotpotqa"}


@pytest.mark.parametrize("name", list(EVAL_SPLITS))
def test_a_bad_row_names_file_row_and_field_and_writes_nothing(flashrag_dir, tmp_path, name):
    source = tmp_path / "flashrag"
    shutil.copytree(flashrag_dir, source)
    path = source / name / f"{EVAL_SPLITS[name]}.jsonl"
    bad, says = BAD_ROWS[name]
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(bad, ensure_ascii=False) + "\n")
    with pytest.raises(DataError) as e:
        main(["--out", str(tmp_path / "out"), "--local", str(source)])
    message = str(e.value)
    assert message.startswith(f"{path}: row 4: ") and says in message and "\n" not in message, message
    assert not (tmp_path / "out").exists()


def test_the_command_prepares_the_named_benchmarks(flashrag_dir, tmp_path, capsys):
    main(["--out", str(tmp_path / "out"), "--local", str(flashrag_dir), "--names", "nq,Bamboogle", "--train", "nq"])
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'out'}: nq 3 test, nq 5 train, bamboogle 3 test"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["bamboogle", "manifest.json", "nq"]


@pytest.mark.parametrize("argv, says", [
    (["--names", "nq,squad"], "unknown benchmark(s) squad (known: nq, triviaqa"),
    (["--train", "popqa"], "--train: popqa has no train split"),
    (["--train", "triviaqa"], "triviaqa/train.jsonl: benchmark file not found"),
])
def test_wrong_choices_are_one_line_errors(flashrag_dir, tmp_path, argv, says):
    with pytest.raises(DataError, match="^.*" + says.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        main(["--out", str(tmp_path / "out"), "--local", str(flashrag_dir), *argv])
    with pytest.raises(DataError, match="--local folder not found"):
        main(["--out", str(tmp_path / "out"), "--local", str(tmp_path / "nowhere")])


def test_the_synthetic_world_in_flashrag_layout_prepares_as_the_real_ones(world_dir, tmp_path):
    written = synthetic_benchmarks(world_dir, tmp_path / "flashrag", per_name=8)
    assert set(written) == set(EVAL_SPLITS) and written["nq"] == {"test": 8, "train": 32}
    counts = prepare_benchmarks(tmp_path / "out", source=str(tmp_path / "flashrag"), train=["nq", "hotpotqa"])
    assert counts == written
    hotpot = load_questions(tmp_path / "out" / "hotpotqa" / "dev.parquet")
    assert {q.type for q in hotpot} <= {"comparison", "bridge"} and all(len(q.supporting_titles) >= 2 for q in hotpot)
    world_test = {q.problem for q in load_questions(world_dir / "test.jsonl")}
    assert {q.problem for q in load_questions(tmp_path / "out" / "musique" / "dev.parquet")} <= world_test
