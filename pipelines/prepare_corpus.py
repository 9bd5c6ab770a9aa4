"""Fetch wiki-18 (Wikipedia, Dec 2018, in DPR's 100-word passages) and write it as the JSONL the index reads.

    python -m pipelines.prepare_corpus --out data/wiki-18.jsonl                      # Search-R1's copy
    python -m pipelines.prepare_corpus --out data/wiki-18.jsonl --layout flashrag    # FlashRAG's wiki18_100w
    python -m pipelines.prepare_corpus --out data/wiki-18.jsonl --source wiki-18.jsonl.gz   # offline
    python -m pipelines.prepare_corpus --out data/wiki-18-train-fixed.jsonl \
        --add-train-paragraphs hotpotqa,2wikimultihopqa,musique [--benchmarks data/flashrag]

A thin main over `kr1.retrieval.wiki18.prepare_corpus` (the two published copies, validation and the
`<out>.meta.json` sidecar are described there) and `kr1.retrieval.train_paragraphs` (what
`--add-train-paragraphs` appends: the *training* questions' supporting paragraphs the corpus lacks).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

from kr1.benchmarks import HUB_ID as BENCHMARKS_HUB_ID
from kr1.errors import run_cli
from kr1.retrieval.corpus_file import meta_path
from kr1.retrieval.train_paragraphs import TrainParagraphs
from kr1.retrieval.wiki18 import LAYOUTS, prepare_corpus


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="corpus JSONL to write (id, contents)")
    parser.add_argument("--layout", default="search-r1", choices=sorted(LAYOUTS),
                        help="which published copy: Search-R1's wiki-18.jsonl.gz or FlashRAG's wiki18_100w.zip")
    parser.add_argument("--source", type=Path, help="a local copy (file, or folder holding it at its repo path) "
                                                    "instead of the hub")
    parser.add_argument("--revision", help="hub revision (default: main)")
    parser.add_argument("--add-train-paragraphs", metavar="NAMES",
                        help="comma-separated benchmarks (hotpotqa,2wikimultihopqa,musique) whose TRAIN split's "
                             "supporting paragraphs missing from the corpus are appended (never dev or test)")
    parser.add_argument("--benchmarks", default=BENCHMARKS_HUB_ID,
                        help="where <name>/train.jsonl lies: FlashRAG's hub dataset (default) or a local folder")
    args = parser.parse_args(argv)
    extra = None
    if args.add_train_paragraphs is not None:
        names = [n.strip().lower() for n in args.add_train_paragraphs.split(",") if n.strip()]
        extra = TrainParagraphs.load(args.benchmarks, names)
    rows = prepare_corpus(args.out, args.layout, args.source, args.revision, extra=extra)
    print(f"wrote {rows} passages to {args.out} (row count and sha256 in {meta_path(args.out)})")
    if extra is not None:
        record = json.loads(meta_path(args.out).read_text())["train_paragraphs"]
        print(f"added training paragraphs: {record['added'] or 'none'}; missing titles without a paragraph to add: "
              f"{record['missing_without_paragraph']}")


if __name__ == "__main__":
    run_cli(main)
