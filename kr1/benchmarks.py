"""The seven standard search-QA benchmarks: which split each is evaluated on, and preparing them (load,
validate every row, write parquet).

    prepare_benchmarks(Path("data/benchmarks"), train=["nq", "hotpotqa"])   # python -m pipelines.prepare_benchmarks
    EVAL_SPLITS["hotpotqa"], TRAIN_SPLITS, MANIFEST                          # what kr1.run.evaluation reads

Sources are FlashRAG's files (hub dataset `RUC-NLPIR/FlashRAG_datasets`, rows `id`, `question`,
`golden_answers`, `metadata`), read through `datasets` in both cases: a hub id or a local folder
in the same layout. Each benchmark keeps the split Search-R1 evaluates (test for NQ, TriviaQA,
PopQA and Bamboogle; dev for HotpotQA, 2WikiMultihopQA and Musique); `train` (`--train NAMES`) adds the
train split of those (Search-R1 trains on NQ + HotpotQA). Rows become kr1 questions:
ids prefixed with the benchmark's name (FlashRAG's `test_0` repeats across benchmarks, and a
training mixture needs unique ids), `dataset` set, the question type and supporting-passage
titles kept where `metadata` carries them. Every file is validated before anything is written;
a bad row stops the job with its file, row and field. Writes `OUT/<name>/<split>.parquet` and
`OUT/manifest.json` (which split of each benchmark `kr1.eval --benchmarks` reads).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from kr1.atomic_write import atomic_directory, write_json
from kr1.data import QUESTION_TYPES, DataError, QARecord, validate_question, validate_questions, write_questions_parquet
from kr1.errors import described

HUB_ID = "RUC-NLPIR/FlashRAG_datasets"
# benchmark -> the split Search-R1's table reports
EVAL_SPLITS = {"nq": "test", "triviaqa": "test", "popqa": "test", "hotpotqa": "dev", "2wikimultihopqa": "dev",
               "musique": "dev", "bamboogle": "test"}
TRAIN_SPLITS = ("nq", "triviaqa", "hotpotqa", "2wikimultihopqa", "musique")  # those FlashRAG has a train split of
MANIFEST = "manifest.json"


def row_metadata(row: dict, where: str) -> dict:
    """A FlashRAG row's `metadata` as a dict ({} where it has none; a JSON string is parsed)."""
    meta = row.get("metadata")
    if isinstance(meta, str):  # some exports keep it as a JSON string
        try:
            meta = json.loads(meta)
        except json.JSONDecodeError:
            raise DataError(f"{where}: field 'metadata' is a string but not JSON") from None
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise DataError(f"{where}: field 'metadata' must be an object, got {type(meta).__name__}")
    return meta


def supporting_titles(meta: dict) -> list[str]:
    """Titles of the passages the answer needs, in the layouts FlashRAG's metadata uses: HotpotQA/2Wiki
    `supporting_facts` ({"title": [...]} or [[title, sentence], ...]), Musique `paragraphs` with
    `is_supporting`."""
    titles: list[Any] = []
    facts = meta.get("supporting_facts")
    if isinstance(facts, dict):
        titles = list(facts.get("title") or [])
    elif isinstance(facts, list):
        titles = [f[0] if isinstance(f, (list, tuple)) and f else f for f in facts]
    for paragraph in meta.get("paragraphs") or []:
        if isinstance(paragraph, dict) and paragraph.get("is_supporting"):
            titles.append(paragraph.get("title"))
    return list(dict.fromkeys(t.strip() for t in titles if isinstance(t, str) and t.strip()))


def flashrag_record(row: Any, where: str, name: str, number: int) -> QARecord:
    """One FlashRAG row as a kr1 question (validated with the question schema's one-line errors)."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    meta = row_metadata(row, where)
    qtype = meta.get("type") if meta.get("type") in QUESTION_TYPES else ""
    fields = {"question": row.get("question"), "golden_answers": row.get("golden_answers"),
              "id": f"{name}-{row.get('id') if row.get('id') not in (None, '') else number}",
              "type": qtype, "supporting_titles": supporting_titles(meta), "dataset": name}
    return validate_question(fields, where, default_id=f"{name}-{number}", question_field="question")


def load_benchmark(source: str, name: str, split: str) -> list[QARecord]:
    """One split of one benchmark from a hub id or a local folder in FlashRAG's layout, validated."""
    import datasets

    relative = f"{name}/{split}.jsonl"
    local = Path(source).expanduser()
    origin = str(local / relative) if local.is_dir() else f"{source}:{relative}"
    if local.is_dir() and not (local / relative).is_file():
        raise DataError(f"{origin}: benchmark file not found")
    try:
        rows = datasets.load_dataset(str(local) if local.is_dir() else source, data_files={split: relative},
                                     split=split)
    except Exception as e:  # offline, missing, or unparsable: one line, not a traceback
        raise DataError(f"{origin}: cannot load ({described(e)})") from None
    return validate_questions(enumerate(rows, start=1), origin,
                              lambda row, where, number: flashrag_record(row, where, name, number))


def parse_names(names: str | Sequence[str]) -> list[str]:
    """A comma-separated or listed choice of benchmarks, each one kr1 knows."""
    picked = [n.strip().lower() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    unknown = [n for n in picked if n not in EVAL_SPLITS]
    if unknown or not picked:
        raise DataError(f"unknown benchmark(s) {', '.join(unknown) or '(none given)'} "
                        f"(known: {', '.join(EVAL_SPLITS)})")
    return picked


def prepare_benchmarks(out: Path, names: Sequence[str] = tuple(EVAL_SPLITS), source: str = HUB_ID,
                       train: Sequence[str] = ()) -> dict[str, dict[str, int]]:
    """Validate every file first, then write `out/<name>/<split>.parquet` (the evaluation split of each of
    `names`, the train split of each of `train`) and the manifest atomically; returns {name: {split: rows}}."""
    no_train = [n for n in train if n not in TRAIN_SPLITS]
    if no_train:
        raise DataError(f"--train: {', '.join(no_train)} has no train split (those that do: {', '.join(TRAIN_SPLITS)})")
    splits = {name: ([EVAL_SPLITS[name]] if name in names else []) + (["train"] if name in train else [])
              for name in dict.fromkeys([*names, *train])}
    loaded = {(name, split): load_benchmark(source, name, split) for name, wanted in splits.items() for split in wanted}
    counts: dict[str, dict[str, int]] = {name: {} for name in splits}
    with atomic_directory(out) as tmp:
        for (name, split), rows in loaded.items():
            (tmp / name).mkdir(exist_ok=True)
            write_questions_parquet(tmp / name / f"{split}.parquet", rows)
            counts[name][split] = len(rows)
        write_json(tmp / MANIFEST, {"source": source, "benchmarks": {
            name: {"eval_split": EVAL_SPLITS[name], "counts": counts[name]} for name in splits}})
    return counts
