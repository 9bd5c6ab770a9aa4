"""Speed and memory of kr1 beside simple baselines, in one run, as one markdown table.

    python -m kr1.bench                                  # full size (the goals below), ~7 min on 2 cores
    python -m kr1.bench --size tiny --only retrieval memory --out bench.md
    python -m kr1.bench --only scale --scale-passages 1000000 2000000 4000000   # ~30 min, ~10 GiB of disk

| benchmark | kr1 | baseline | goal |
|---|---|---|---|
| rollout | one batched multi-turn rollout | the same episodes one at a time | >= 10x tokens/s at batch 64 |
| agent | per-episode agent loop | turn loop, same engine; plain generation | >= 1.5x; >= 0.7 of the plain |
| retrieval | Ray retriever pool, 1/2/4 shards | bm25s in-process; rank_bm25 | >= 0.8x bm25s; > 100x rank_bm25 |
| memory | token-budget micro-batches | fixed rows per micro-batch | peak within 1.25x from 1x to 8x length |
| logits | log-probs in chunks, 152k vocabulary | the full T x V logits | peak <= 0.4x; update time <= 1.15x |
| sync | object-store sync in bf16 | the same in fp32 | half the bytes |
| step | share of a driver step per phase | - | weight sync < 5% of the step |
| overlap | reward beside the reference | reward, then reference | - |
| driver | the driver's own work per step at the 3B recipe's size | a step's rollout budget | < 1% of it |
| scale | chunked index build, pool at 1-4M passages | bm25s index() and retrieval | build <= 4 GiB a process; >= 0.8x |

It starts a local Ray (or joins RAY_ADDRESS) and uses the embedded default's world,
index and tiny model (`~/.cache/kr1`, built on first use) unless --world/--index/--model
name others. Full-size retrieval runs on a 115,500-passage wiki-like corpus and queries of its
kind (`kr1.retrieval.wiki_like`), written once under --cache-dir. `step`, `overlap` and `async`
come from one measurement. Progress goes to stderr; the table to stdout (and --out). A benchmark
that fails stops the run: the table of the rows measured before it is printed, then the failure
in one `error:` line (after its traceback, where it is not a user error), and the exit status is
1 (2 for a user error).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Sequence

from kr1.bench.suite import BENCHMARKS, ON_REQUEST, SIZES, BenchmarkFailed, run_benchmarks
from kr1.bench.table import Row, markdown_table
from kr1.errors import run_cli


def main(argv: Sequence[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(prog="python -m kr1.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="full", help="tiny: a quick smoke run")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, metavar="NAME",
                        default=[b for b in BENCHMARKS if b not in ON_REQUEST],
                        help=f"run only these ({', '.join(BENCHMARKS)}; {', '.join(ON_REQUEST)} only when named)")
    parser.add_argument("--scale-passages", nargs="+", type=int, metavar="N",
                        help="corpus sizes of the scale benchmark (default: 1000000 2000000 4000000; tiny: 5000 "
                             "10000)")
    parser.add_argument("--out", type=Path, help="also write the table to this markdown file")
    parser.add_argument("--world", type=Path, help="question files (train/dev/test.jsonl) instead of the default's")
    parser.add_argument("--index", type=Path, help="index of the world (retriever.num_shards shards)")
    parser.add_argument("--model", type=Path, help="model directory instead of the default tiny model")
    parser.add_argument("--corpus", type=Path, help="retrieval benchmark corpus (default: see --size)")
    parser.add_argument("--cache-dir", type=Path, default=Path("~/.cache/kr1/bench"),
                        help="where the large corpus and the retrieval indexes are built once")
    args = parser.parse_args(argv)
    only = [b for b in BENCHMARKS if b in args.only]
    start = time.perf_counter()
    try:
        rows, failed = run_benchmarks(args.size, only, args.world, args.index, args.model, args.corpus,
                                      args.cache_dir, args.scale_passages or ()), None
    except BenchmarkFailed as e:
        rows, failed = e.rows, e
        if not e.user_error:  # a bug: its traceback first, the rows measured before it below
            traceback.print_exception(e.cause, file=sys.stderr)
    table = markdown_table(rows)
    footer = (f"\n\n`python -m kr1.bench --size {args.size}`, {time.strftime('%Y-%m-%d')}, "
              f"{os.cpu_count()} CPU cores, {time.perf_counter() - start:.0f} s wall"
              + (f"; stopped: {failed}" if failed else ""))
    print(table + footer, flush=True)
    if args.out:
        args.out.write_text(table + footer + "\n")
    if failed:
        print(f"error: {failed} (the table above holds the {len(rows)} row(s) measured before it)", file=sys.stderr)
        sys.exit(2 if failed.user_error else 1)
    return rows


if __name__ == "__main__":
    run_cli(main)
