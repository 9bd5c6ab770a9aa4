"""Look up what the model would read: ranked passages for queries, from a kr1 BM25 index.

    python -m kr1.search --index ~/.cache/kr1/index --top-k 3 "who directed the amber lantern"
    echo "where was arlen voss born" | python -m kr1.search --index DIR --json

Queries come from the arguments, from a question file (`--questions dev.jsonl --limit 5`)
or, when there are none, one a line from standard input. Text output lists rank, score,
document id and title; `--json` prints one object per query: {"query", "ids", "scores",
"titles"}. All shards are searched in this process and merged exactly as the retriever pool
merges them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence, TextIO

from kr1.data import load_questions
from kr1.errors import run_cli
from kr1.retrieval.hits import Hit
from kr1.retrieval.scoring import search_index


def print_results(queries: Sequence[str], results: Sequence[Sequence[Hit]], as_json: bool, out: TextIO) -> None:
    for query, hits in zip(queries, results):
        if as_json:
            out.write(json.dumps({"query": query, "ids": [h.id for h in hits], "scores": [h.score for h in hits],
                                  "titles": [h.title for h in hits]}, ensure_ascii=False) + "\n")
            continue
        out.write(f"query: {query}\n")
        if not hits:
            out.write("  (no passage shares a term with this query)\n")
        for rank, hit in enumerate(hits, start=1):
            out.write(f"  {rank:>2}. {hit.score:8.4f}  [{hit.id}] {hit.title}\n")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--index", required=True, type=Path, help="index directory (pipelines.build_index)")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="one JSON object per query")
    parser.add_argument("--backend", choices=("numba", "numpy"), default="numba")
    parser.add_argument("--max-query-chars", type=int, default=1000)
    parser.add_argument("--questions", type=Path, help="search the questions of a dataset file instead")
    parser.add_argument("--limit", type=int, default=5, help="with --questions: how many")
    parser.add_argument("queries", nargs="*", help="queries (default: one a line from stdin)")
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error("--top-k must be at least 1")
    if args.questions:
        queries = [q.problem for q in load_questions(args.questions)[:args.limit]]
    else:
        queries = args.queries or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    results = search_index(args.index, queries, args.top_k, args.backend, args.max_query_chars)
    print_results(queries, results, args.json, sys.stdout)


if __name__ == "__main__":
    run_cli(main)
