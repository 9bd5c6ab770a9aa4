"""Can the corpus answer the questions? The share of questions whose supporting passages are all indexed.

    wanted = supporting_keys(questions)
    present = indexed_titles(index_dir, wanted)         # streams every shard's passages once
    rows = coverage_rows(questions, present, sample=5)  # per dataset and question type
    print(coverage_table(rows))

A question's supporting titles (2WikiMultihopQA's and HotpotQA's `supporting_facts`, MuSiQue's
supporting paragraphs; `QARecord.supporting_titles`) are matched against the titles of the index's
passages as the evidence reward matches retrieved titles: case-folded, runs of whitespace as one
space. A question counts as covered when every one of its supporting titles has a passage;
questions without supporting titles (NQ, TriviaQA, PopQA) are counted apart and left out of both
shares. `python -m kr1.coverage` prints the table.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from kr1.data import DataError, QARecord
from kr1.retrieval.index import IndexManifest, shard_dir


def title_key(title: str) -> str:
    """A title as matched: case-folded, whitespace collapsed (the evidence reward's `_title_key`)."""
    return " ".join(title.casefold().split())


def question_keys(question: QARecord) -> list[str]:
    """The question's supporting titles as keys, each once, in order."""
    return list(dict.fromkeys(k for k in map(title_key, question.supporting_titles) if k))


def supporting_keys(questions: Iterable[QARecord]) -> set[str]:
    return {k for q in questions for k in question_keys(q)}


def indexed_titles(index_dir: str | Path, wanted: set[str]) -> set[str]:
    """The keys of `wanted` that some passage of the index is titled (every shard's stored passages, streamed)."""
    manifest = IndexManifest.load(index_dir)
    found: set[str] = set()
    for shard in range(manifest.num_shards):
        store = shard_dir(index_dir, shard) / "corpus.jsonl"
        if not store.is_file():
            raise DataError(f"{store}: not found; the index is incomplete, rebuild it")
        with open(store, "rb") as handle:
            for line in handle:
                if line.strip() and (key := title_key(json.loads(line).get("title") or "")) in wanted:
                    found.add(key)
    return found


@dataclass
class CoverageRow:
    """One dataset and question type: how much of what its questions need the index holds."""

    dataset: str
    type: str
    questions: int = 0  # with supporting titles
    covered: int = 0  # of those, all supporting titles indexed
    titles: int = 0  # (question, title) pairs
    found: int = 0
    without_titles: int = 0  # questions naming no supporting passage: not counted above
    missing: list[str] = field(default_factory=list)  # distinct missing titles, a seeded sample

    @property
    def question_share(self) -> float:
        return self.covered / self.questions if self.questions else float("nan")

    @property
    def title_share(self) -> float:
        return self.found / self.titles if self.titles else float("nan")


def coverage_rows(questions: Sequence[QARecord], present: set[str], sample: int = 5, seed: int = 0,
                  default_dataset: str = "") -> list[CoverageRow]:
    """Per (dataset, type), sorted, then an `all` row per dataset when it has several types."""
    groups: dict[tuple[str, str], CoverageRow] = {}
    missing: dict[tuple[str, str], dict[str, None]] = defaultdict(dict)
    for q in questions:
        group = (q.dataset or default_dataset, q.type)
        for key in [group, (group[0], "all")]:
            row = groups.setdefault(key, CoverageRow(*key))
            keys = question_keys(q)
            if not keys:
                row.without_titles += 1
                continue
            titles = [t for t in dict.fromkeys(q.supporting_titles) if t.strip()]
            absent = [t for t in titles if title_key(t) not in present]
            row.questions += 1
            row.covered += not absent
            row.titles += len(keys)
            row.found += sum(k in present for k in keys)
            missing[key].update(dict.fromkeys(absent))
    rng = random.Random(seed)
    for key, row in groups.items():
        names = list(missing[key])
        row.missing = sorted(rng.sample(names, min(sample, len(names))))
    types_per_dataset = defaultdict(int)
    for dataset, qtype in groups:
        types_per_dataset[dataset] += qtype != "all"
    return [groups[k] for k in sorted(groups, key=lambda k: (k[0], k[1] == "all", k[1]))
            if k[1] != "all" or types_per_dataset[k[0]] > 1]


def coverage_table(rows: Sequence[CoverageRow]) -> str:
    """Markdown: per dataset and type the share of questions fully covered and of supporting titles found."""
    def share(x: float) -> str:
        return "-" if x != x else f"{100 * x:.1f} %"

    lines = ["| dataset | type | questions | all supporting titles indexed | supporting titles indexed | "
             "without titles | missing (sample) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.dataset or '-'} | {r.type or '-'} | {r.questions} | {share(r.question_share)} | "
                     f"{share(r.title_share)} ({r.found}/{r.titles}) | {r.without_titles} | "
                     f"{'; '.join(r.missing).replace('|', chr(92) + '|')} |")
    return "\n".join(lines)
