"""The synthetic world's questions in FlashRAG's layout, under the seven benchmarks' names, so the
benchmark path (prepare, evaluate, train on a mixture) runs offline on the embedded default.

    synthetic_benchmarks(world, Path("flashrag/"))                            # pipelines.synthetic_benchmarks
    python -m pipelines.prepare_benchmarks --local flashrag/ --out data/benchmarks --train

Every evaluation file asks about the world's test region, whose entities no training question
and no warm-start example mentions, so no row measures memorisation. General QA (nq, triviaqa,
popqa) gets one-passage questions about those entities, multi-hop QA the world's test
questions: hotpotqa its comparisons (FlashRAG's HotpotQA metadata: `type` bridge or
comparison, `supporting_facts` as {title, sent_id}), 2wikimultihopqa every type (2Wiki's
metadata), musique compositional and inference questions (`paragraphs` with `is_supporting`),
bamboogle compositional ones without metadata. nq and hotpotqa also get a train split (the
training region's one-passage and comparison questions). These are not the real benchmarks.
"""

from __future__ import annotations

from pathlib import Path

from kr1.atomic_write import atomic_directory, write_jsonl
from kr1.data import QARecord, load_questions


def _row(record: QARecord, qid: str, name: str) -> dict:
    titles = record.supporting_titles
    if name in ("hotpotqa", "2wikimultihopqa"):
        qtype = "bridge" if name == "hotpotqa" and record.type == "bridge_comparison" else record.type
        meta = {"type": qtype, "supporting_facts": {"title": titles, "sent_id": [0] * len(titles)}}
    elif name == "musique":
        meta = {"answerable": True, "paragraphs": [{"idx": i, "title": t, "is_supporting": True}
                                                   for i, t in enumerate(titles)]}
    else:
        meta = {}
    return {"id": qid, "question": record.problem, "golden_answers": record.golden_answers, "metadata": meta}


def synthetic_benchmarks(world: Path, out: Path, per_name: int = 50) -> dict[str, dict[str, int]]:
    """Write `out/<name>/<split>.jsonl` for the seven names; returns {name: {split: rows}}."""
    single, train = load_questions(world / "single_hop.jsonl"), load_questions(world / "train.jsonl")
    held_out, test = load_questions(world / "single_hop_test.jsonl"), load_questions(world / "test.jsonl")
    of_type = lambda rows, *types: [q for q in rows if q.type in types]  # noqa: E731
    files = {
        ("nq", "test"): held_out[0::3], ("triviaqa", "test"): held_out[1::3], ("popqa", "test"): held_out[2::3],
        ("hotpotqa", "dev"): of_type(test, "comparison", "bridge_comparison"),
        ("2wikimultihopqa", "dev"): test,
        ("musique", "dev"): of_type(test, "compositional", "inference"),
        ("bamboogle", "test"): of_type(test, "compositional")[::-1],
        ("nq", "train"): single[0::3],
        ("hotpotqa", "train"): of_type(train, "comparison", "bridge_comparison"),
    }
    counts: dict[str, dict[str, int]] = {}
    with atomic_directory(out) as tmp:
        for (name, split), rows in files.items():
            (tmp / name).mkdir(exist_ok=True)
            picked = rows[:per_name] if split != "train" else rows[:4 * per_name]
            counts.setdefault(name, {})[split] = write_jsonl(
                tmp / name / f"{split}.jsonl", (_row(q, f"{split}_{i}", name) for i, q in enumerate(picked)))
    return counts
