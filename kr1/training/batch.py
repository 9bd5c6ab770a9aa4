"""The training batch: one typed protocol from finished episodes to the learner.

    batch = TrainBatch.from_episodes(episodes, pad_id)
    batch = batch.with_fields(rewards=scores.rewards, advantages=...)   # set by the driver
    halves = batch.chunk(2)           # data-parallel shards
    same = TrainBatch.concat(halves)

Sequences are prompt + response, right-padded to the longest. `loss_mask` is 1 only on
tokens the model generated (never prompt, retrieved or appended text). Log-probs are
aligned with tokens: `logprobs[:, t]` is log p(token t | tokens before t); column 0 is 0.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Sequence

import numpy as np


def _flags(values: Sequence[int]) -> np.ndarray:
    """0/1 flags as int8; a list through `bytes` (one C loop, a third of numpy's per-element conversion)."""
    return np.frombuffer(bytes(values), np.int8) if isinstance(values, list) else np.asarray(values, np.int8)


@dataclass
class TrainBatch:
    input_ids: np.ndarray  # (B, T) int64 prompt + response, right-padded
    attention_mask: np.ndarray  # (B, T) int8 1 on real tokens
    loss_mask: np.ndarray  # (B, T) int8 1 on model-generated tokens only
    prompt_lengths: np.ndarray  # (B,) int64
    group_ids: np.ndarray  # (B,) int64 episodes of the same question share a group
    rewards: np.ndarray | None = None  # (B,) float32
    advantages: np.ndarray | None = None  # (B,) float32 per sequence, broadcast over its tokens; or (B, T) per token
    ref_logprobs: np.ndarray | None = None  # (B, T) float32
    old_logprobs: np.ndarray | None = None  # (B, T) float32 policy at rollout time (multi-mini-batch PPO)
    # (B, T) float32 the engine's log-probs of the sampled tokens (trainer.mode=async: the behaviour policy,
    # some updates older than the learner's)
    behaviour_logprobs: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def lengths(self) -> np.ndarray:
        """(B,) real tokens per sequence."""
        return self.attention_mask.sum(axis=1).astype(np.int64)

    @property
    def num_loss_tokens(self) -> int:
        return int(self.loss_mask.sum())

    @classmethod
    def from_episodes(cls, episodes: Sequence[Any], pad_id: int, behaviour: bool = False) -> "TrainBatch":
        """Stack episodes (prompt_ids, response_ids, loss_mask, question_id) into padded arrays; `behaviour`:
        with their sampling log-probs (episode.logprobs) as `behaviour_logprobs`."""
        width = max(e.length for e in episodes)
        n = len(episodes)
        ids = np.full((n, width), pad_id, dtype=np.int64)
        attention = np.zeros((n, width), dtype=np.int8)
        mask = np.zeros((n, width), dtype=np.int8)
        group_of: dict[str, int] = {}
        groups = np.zeros(n, dtype=np.int64)
        sampled = np.zeros((n, width), dtype=np.float32) if behaviour else None
        for i, e in enumerate(episodes):  # the driver's largest cost per step: a few million tokens (kr1.bench driver)
            p, r = len(e.prompt_ids), len(e.response_ids)
            ids[i, :p], ids[i, p:p + r] = e.prompt_ids, e.response_ids  # no concatenated copy per episode
            attention[i, :p + r] = 1
            mask[i, p:p + r] = _flags(e.loss_mask)
            groups[i] = group_of.setdefault(e.question_id, len(group_of))
            if sampled is not None:
                sampled[i, p:p + r] = e.logprobs
        prompts = np.array([len(e.prompt_ids) for e in episodes], dtype=np.int64)
        return cls(ids, attention, mask, prompts, groups, behaviour_logprobs=sampled)

    def select(self, rows: Sequence[int] | np.ndarray) -> "TrainBatch":
        """The given rows (a copy), trimmed to their longest sequence (padding never travels)."""
        rows = np.asarray(rows, dtype=np.int64)
        return self._rows(rows, len(rows))

    def chunk(self, n: int) -> list["TrainBatch"]:
        """`n` contiguous, near-equal parts (some may be empty when len < n): views, each trimmed to its longest
        sequence (a part the driver slices again costs no copy of its own)."""
        edges = np.linspace(0, len(self), n + 1).round().astype(int)
        return [self._rows(slice(int(edges[i]), int(edges[i + 1])), int(edges[i + 1] - edges[i])) for i in range(n)]

    def _rows(self, index: np.ndarray | slice, count: int) -> "TrainBatch":
        width = int(self.attention_mask[index].sum(axis=1).max()) if count else 1  # these rows' lengths only
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                out[f.name] = None
            elif value.ndim == 2:
                out[f.name] = value[index, :width]
            else:
                out[f.name] = value[index]
        return TrainBatch(**out)

    @classmethod
    def concat(cls, parts: Sequence["TrainBatch"]) -> "TrainBatch":
        """Stack parts back together, padding to the widest."""
        parts = [p for p in parts if len(p)]
        width = max(p.input_ids.shape[1] for p in parts)
        out = {}
        for f in fields(cls):
            values = [getattr(p, f.name) for p in parts]
            if any(v is None for v in values):
                out[f.name] = None
            elif values[0].ndim == 2:
                out[f.name] = np.concatenate([np.pad(v, ((0, 0), (0, width - v.shape[1]))) for v in values])
            else:
                out[f.name] = np.concatenate(values)
        return cls(**out)

    def with_fields(self, **changes: Any) -> "TrainBatch":
        return replace(self, **changes)

    def tokens_only(self) -> "TrainBatch":
        """The sequences without rewards, advantages or log-probs: all that a log-prob pass reads."""
        return TrainBatch(self.input_ids, self.attention_mask, self.loss_mask, self.prompt_lengths, self.group_ids)
