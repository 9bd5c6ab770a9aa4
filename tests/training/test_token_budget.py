"""Token-budget micro-batches and the TrainBatch protocol."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kr1.training.batch import TrainBatch
from kr1.training.token_budget import TokenBudgetBatcher

pytestmark = pytest.mark.numerics  # updates of different micro-batch splits compared


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 300), min_size=1, max_size=60), st.integers(1, 1000))
def test_every_row_once_and_budget_respected(lengths, budget):
    lengths = np.array(lengths)
    micro = TokenBudgetBatcher(budget).split(lengths)
    rows = np.concatenate(micro)
    assert sorted(rows.tolist()) == list(range(len(lengths)))
    for m in micro:
        padded = len(m) * lengths[m].max()
        assert padded <= budget or len(m) == 1  # a row longer than the budget goes alone
        assert lengths[m].sum() <= max(budget, lengths[m].max())


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 200), min_size=1, max_size=40), st.integers(50, 800), st.integers(1, 4))
def test_plan_gives_ranks_equal_pass_counts(lengths, budget, ranks):
    plan = TokenBudgetBatcher(budget).plan(np.array(lengths), ranks)
    assert len(plan) == ranks and len({len(p) for p in plan}) == 1
    rows = sorted(int(r) for p in plan for m in p for r in m)
    assert rows == list(range(len(lengths)))


def test_longer_responses_make_more_smaller_micro_batches():
    batcher = TokenBudgetBatcher(4096)
    short, long = batcher.split(np.full(64, 256)), batcher.split(np.full(64, 2048))
    assert len(short) == 4 and len(long) == 32
    assert max(len(m) * 256 for m in short) <= 4096 and max(len(m) * 2048 for m in long) <= 4096


def _episode(qid, prompt, response, mask):
    return SimpleNamespace(question_id=qid, prompt_ids=prompt, response_ids=response, loss_mask=mask,
                           length=len(prompt) + len(response))


def test_batch_from_episodes_masks_only_generated_tokens():
    episodes = [_episode("a", [1, 2, 3], [4, 5, 6, 7], [1, 0, 0, 1]), _episode("a", [1, 2, 3], [8], [1]),
                _episode("b", [9], [10, 11], [1, 1])]
    batch = TrainBatch.from_episodes(episodes, pad_id=0)
    assert batch.input_ids.shape == (3, 7)
    assert batch.loss_mask[0].tolist() == [0, 0, 0, 1, 0, 0, 1]
    assert batch.loss_mask[1].tolist() == [0, 0, 0, 1, 0, 0, 0]
    assert batch.attention_mask.sum(1).tolist() == [7, 4, 3]
    assert batch.group_ids.tolist() == [0, 0, 1]
    assert batch.num_loss_tokens == 5


def test_chunk_select_concat_round_trip():
    episodes = [_episode(str(i), [1] * (i + 1), [2] * (5 - i), [1] * (5 - i)) for i in range(5)]
    batch = TrainBatch.from_episodes(episodes, pad_id=0).with_fields(
        rewards=np.arange(5, dtype=np.float32), advantages=np.ones(5, dtype=np.float32))
    parts = batch.chunk(3)
    assert [len(p) for p in parts] == [2, 1, 2]
    again = TrainBatch.concat(parts)
    np.testing.assert_array_equal(again.input_ids * again.attention_mask, batch.input_ids * batch.attention_mask)
    np.testing.assert_array_equal(again.rewards, batch.rewards)
    trimmed = batch.select([4])
    assert trimmed.input_ids.shape == (1, 6)
    with pytest.raises(ValueError):
        TokenBudgetBatcher(0).split(np.array([3]))
