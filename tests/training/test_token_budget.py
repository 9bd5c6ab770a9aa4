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


def test_rank_parts_and_rows_back_undo_each_other_and_consecutive_rows_are_views():
    """The learner group's slicing in the driver: each rank's part holds its rows (trimmed to them), its micro-batches
    index that part, and the ranks' values go back to their rows; `chunk`'s consecutive rows cost no copy."""
    from kr1.training.token_budget import rank_parts, rows_back

    rng = np.random.default_rng(0)
    episodes = [_episode(str(i // 3), [1] * int(rng.integers(2, 6)), list(range(10, 10 + n)), [1] * n)
                for i, n in enumerate(rng.integers(1, 30, 24))]
    batch = TrainBatch.from_episodes(episodes, pad_id=0).with_fields(advantages=rng.normal(size=24).astype(np.float32))
    parts = rank_parts(batch, TokenBudgetBatcher(64), 3)
    assert sorted(int(r) for rows, _, _ in parts for r in rows) == list(range(24))
    for rows, part, micro in parts:
        assert part.input_ids.shape == (len(rows), int(batch.lengths[rows].max()))
        np.testing.assert_array_equal(part.advantages, batch.advantages[rows])
        assert sorted(int(i) for m in micro for i in m) == list(range(len(rows)))
    values = [part.input_ids.astype(np.float32) for _, part, _ in parts]  # each rank's (rows, T_part) answer
    back = rows_back(batch.input_ids.shape, [rows for rows, _, _ in parts], values)
    np.testing.assert_array_equal(back, batch.input_ids.astype(np.float32))
    first = batch.chunk(2)[0]
    assert np.shares_memory(first.input_ids, batch.input_ids)  # a view
    np.testing.assert_array_equal(first.input_ids, batch.input_ids[:12, :first.input_ids.shape[1]])
    assert first.input_ids.shape[1] == int(batch.lengths[:12].max())
    assert batch.tokens_only().advantages is None and batch.tokens_only().input_ids is batch.input_ids
    per_token = batch.with_fields(advantages=rng.normal(size=batch.input_ids.shape).astype(np.float32))
    for rows, part, _ in rank_parts(per_token, TokenBudgetBatcher(64), 3):  # step-level credit: (B, T) advantages
        np.testing.assert_array_equal(part.advantages, per_token.advantages[rows, :part.input_ids.shape[1]])
