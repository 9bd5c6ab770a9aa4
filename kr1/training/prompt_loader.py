"""Which questions each training step reads: a pure function of (seed, step).

    loader = PromptLoader(questions, per_step=16, seed=0)
    batch = loader.batch(step)          # the same questions for the same step, resumed or not

Each epoch is a fresh seeded permutation; a step's slice may run across an epoch
boundary. Nothing is stateful, so resuming at step s reads exactly what an
uninterrupted run reads at step s; `position(step)` is the data-loader position
recorded in checkpoints. The permutations of the last two epochs read are kept (a cache,
not state): a step costs its own slice, not a permutation of the whole training set.
"""

from __future__ import annotations

from typing import Collection, Sequence

import numpy as np

from kr1.data import QARecord


class PromptLoader:
    def __init__(self, questions: Sequence[QARecord], per_step: int, seed: int) -> None:
        if not questions:
            raise ValueError("no training questions")
        self.questions = list(questions)
        self.per_step = per_step
        self.seed = seed
        self._orders: dict[int, np.ndarray] = {}  # epoch -> its permutation, the last two epochs read

    def _order(self, epoch: int) -> np.ndarray:
        """The epoch's seeded permutation, computed once while it is read."""
        order = self._orders.get(epoch)
        if order is None:
            order = self._orders[epoch] = np.random.default_rng([self.seed, epoch]).permutation(len(self.questions))
            if len(self._orders) > 2:  # a step smaller than an epoch reads at most two: the oldest goes
                del self._orders[next(iter(self._orders))]
        return order

    def position(self, step: int) -> int:
        """Questions consumed before `step` (the loader's position)."""
        return step * self.per_step

    def extra_batch(self, step: int, round_: int, exclude: Collection[str]) -> list[QARecord]:
        """More prompts for `step` (dynamic sampling's round `round_` >= 1): a seeded draw of questions not in
        `exclude`, the same for the same (seed, step, round), resumed or not."""
        order = np.random.default_rng([self.seed, step, round_, 1]).permutation(len(self.questions))
        fresh = (self.questions[int(i)] for i in order if self.questions[int(i)].id not in exclude)
        return [q for q, _ in zip(fresh, range(self.per_step))]

    def batch(self, step: int) -> list[QARecord]:
        """Questions `position(step)` to `position(step + 1)` of the concatenated epoch permutations."""
        n, out = len(self.questions), []
        position, end = self.position(step), self.position(step + 1)
        while position < end:  # one slice per epoch the step reads (two where it crosses a boundary)
            epoch, offset = divmod(position, n)
            take = min(end - position, n - offset)
            out += [self.questions[int(i)] for i in self._order(epoch)[offset:offset + take]]
            position += take
        return out
