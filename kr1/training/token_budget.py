"""Cut a batch into micro-batches by a token budget, not a sample count.

    plan = TokenBudgetBatcher(budget=8192).plan(lengths, num_ranks=2)
    for rows in plan[rank]: ...        # every rank runs the same number of micro-batches
    parts = rank_parts(batch, batcher, num_ranks=2)   # (rows, part, micro-batches) per rank, before ray.put

A micro-batch holds at most `budget` tokens counted as rows x longest row (its padded
size, which is what activations cost), so a batch of long responses splits into more,
smaller micro-batches and peak memory stays flat. Sequences are sorted by length first
so that similar lengths share a micro-batch and little is spent on padding. A single
sequence longer than the budget gets a micro-batch of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from kr1.training.batch import TrainBatch


@dataclass(frozen=True)
class TokenBudgetBatcher:
    budget: int

    def split(self, lengths: np.ndarray) -> list[np.ndarray]:
        """Row indices of each micro-batch; every row appears exactly once."""
        if self.budget < 1:
            raise ValueError(f"token budget must be positive, got {self.budget}")
        order = np.argsort(-np.asarray(lengths), kind="stable")
        micro: list[np.ndarray] = []
        start = 0
        while start < len(order):
            longest = int(lengths[order[start]])  # sorted descending: the first row is the widest
            take = max(1, self.budget // max(1, longest))
            micro.append(np.sort(order[start:start + take]))
            start += take
        return micro

    def plan(self, lengths: np.ndarray, num_ranks: int) -> list[list[np.ndarray]]:
        """Rows for each rank's micro-batches, padded with empty ones to the same count.

        Rows are dealt to ranks round-robin in length order (balanced work); ranks must run
        the same number of forward/backward passes because FSDP collectives pair up.
        """
        lengths = np.asarray(lengths)
        order = np.argsort(-lengths, kind="stable")
        per_rank = []
        for rank in range(num_ranks):
            rows = np.sort(order[rank::num_ranks])
            per_rank.append([rows[m] for m in self.split(lengths[rows])] if len(rows) else [])
        most = max(len(m) for m in per_rank)
        return [m + [np.zeros(0, dtype=np.int64)] * (most - len(m)) for m in per_rank]


def rank_parts(batch: TrainBatch, batcher: TokenBudgetBatcher,
               num_ranks: int) -> list[tuple[np.ndarray, TrainBatch, list[np.ndarray]]]:
    """Per rank (the learner group's slicing in the driver): its rows of `batch` by `batcher.plan`, those rows as a
    batch of their own (what is put in the object store for it), and its micro-batches as rows of that part."""
    out = []
    for micro in batcher.plan(batch.lengths, num_ranks):
        rows = np.concatenate(micro) if micro else np.zeros(0, np.int64)
        position = {int(r): i for i, r in enumerate(rows)}
        out.append((rows, batch.select(rows), [np.array([position[int(r)] for r in m], dtype=np.int64)
                                               for m in micro]))
    return out


def rows_back(shape: tuple[int, ...], rows_of: Sequence[np.ndarray], values: Sequence[np.ndarray]) -> np.ndarray:
    """(B, T) float32 from each rank's (rows, T_part) values: `rank_parts` undone."""
    out = np.zeros(shape, dtype=np.float32)
    for rows, part in zip(rows_of, values):
        out[rows, :part.shape[1]] = part
    return out
