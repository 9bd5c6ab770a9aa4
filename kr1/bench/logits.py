"""Logits benchmark: the learner's peak memory and step time at a 152k vocabulary, full logits vs chunks.

    rows = logits_rows(tokens=(2048, 4096), chunk=1024)     # part of `python -m kr1.bench`

Each configuration runs `kr1.training.policy_update.train_step` once in a fresh process (as the
memory benchmark does: one torch thread, peak RSS above set-up) on a 2-layer Qwen2 of width 64
and Qwen2.5's vocabulary (151,936), so that the logits dominate; `learner.logits_chunk_tokens=0`
(the full T x V logits) against chunks. Same loss both ways (checked); the chunked path pays a
recompute of each chunk's logits in backward.
"""

from __future__ import annotations

from typing import Callable, Sequence

from kr1.bench.memory import run_child
from kr1.bench.table import Row, met

VOCAB, WIDTH = 151_936, 64
MEMORY_GOAL, TIME_GOAL = 0.4, 1.15


def logits_rows(tokens: Sequence[int], chunk: int, progress: Callable[[str], None] = lambda s: None) -> list[Row]:
    """Peak memory and seconds of one update, full logits vs `chunk`-token chunks, for each length."""
    model, rows = f"random:{VOCAB}:{WIDTH}", 2
    out = []
    for length in tokens:
        progress(f"logits: {length} tokens")
        # one at a time: the full logits of 4k tokens at this vocabulary take ~12 GB
        full, chunked = (run_child(model, rows, 16, length // rows - 16, "budget:1000000", chunk=c) for c in (0, chunk))
        if abs(full["loss"] - chunked["loss"]) > 1e-4 * max(1.0, abs(full["loss"])):
            raise RuntimeError(f"chunked loss {chunked['loss']} differs from the full logits' {full['loss']}")
        predicted = chunk * (2 * 4 + 16) / (length * (4 + 16))  # kr1.plan's logits terms, fp32
        memory, seconds = chunked["peak_mb"] / full["peak_mb"], chunked["seconds"] / full["seconds"]
        out.append(Row("learner logits", f"peak memory, {length} tokens, vocab {VOCAB:,}: chunks of {chunk} vs full",
                       f"{chunked['peak_mb']:,.0f} MiB", f"{full['peak_mb']:,.0f} MiB", memory,
                       f"<= {MEMORY_GOAL}x", met(memory <= MEMORY_GOAL),
                       f"peak RSS above set-up of one update; the plan's logits terms predict {predicted:.2f}x; "
                       f"same loss ({full['loss']:.4f})"))
        out.append(Row("learner logits", f"update time, {length} tokens: chunks of {chunk} vs full",
                       f"{chunked['seconds']:.2f} s", f"{full['seconds']:.2f} s", seconds, f"<= {TIME_GOAL}x",
                       met(seconds <= TIME_GOAL), "one train_step, 1 torch thread; chunks recompute their logits"))
    return out
