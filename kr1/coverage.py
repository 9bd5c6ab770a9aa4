"""Audit a corpus against the questions: how many of them could its passages answer at all?

    python -m kr1.coverage --index data/wiki18_index --questions data/benchmarks/hotpotqa/dev.parquet \
        data/benchmarks/2wikimultihopqa/dev.parquet data/benchmarks/musique/dev.parquet
    python -m kr1.coverage --index ~/.cache/kr1/index --questions ~/.cache/kr1/world/dev.jsonl --out cov.json

Prints, per question file (and the `dataset` its rows name) and question type, the share of
questions all of whose supporting titles have a passage in the index, the share of supporting
titles that do, and a seeded sample of the missing ones (kr1/retrieval/coverage.py). A question
that needs a passage the corpus lacks cannot be answered from retrieval, whatever the policy
learns. To train on a corpus that holds the *training* split's missing passages, write one with
`python -m pipelines.prepare_corpus --add-train-paragraphs` (never dev or test: see the README).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Sequence

from kr1.atomic_write import write_json
from kr1.data import QARecord, load_questions
from kr1.errors import run_cli
from kr1.retrieval.coverage import CoverageRow, coverage_rows, coverage_table, indexed_titles, supporting_keys


def audit(index_dir: str | Path, question_files: Sequence[str | Path], sample: int = 5,
          seed: int = 0) -> list[CoverageRow]:
    """The coverage rows of `question_files` against the index; each file is its own group (`dataset/stem`)."""
    questions: list[QARecord] = []
    for path in map(Path, question_files):
        questions += [dataclasses.replace(q, dataset=f"{q.dataset}/{path.stem}" if q.dataset else path.stem)
                      for q in load_questions(path)]
    present = indexed_titles(index_dir, supporting_keys(questions))
    return coverage_rows(questions, present, sample, seed)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--index", required=True, type=Path, help="index directory (pipelines.build_index)")
    parser.add_argument("--questions", required=True, nargs="+", type=Path, help="question files (JSONL or parquet)")
    parser.add_argument("--sample", type=int, default=5, help="missing titles listed per row (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="which missing titles are listed")
    parser.add_argument("--out", type=Path, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    rows = audit(args.index, args.questions, args.sample, args.seed)
    print(coverage_table(rows))
    if args.out:
        write_json(args.out, [{**dataclasses.asdict(r), "question_share": r.question_share if r.questions else None,
                               "title_share": r.title_share if r.titles else None} for r in rows])
        print(f"rows in {args.out}", file=sys.stderr)


if __name__ == "__main__":
    run_cli(main)
