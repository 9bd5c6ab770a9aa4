"""Supervised warm start on gold single-hop trajectories: the model learns the tag format.

A gold trajectory searches the entity the question names, reads the real retrieved
passages, and answers:

    <prompt> <think>I need to look up X.</think><search>X</search>
    <information>Doc 1 (Title: X) ...</information>                    (loss mask 0)
    <think>X was born in Tavrin.</think><answer>Tavrin</answer><eos>      (quotes the evidence)

With a share of multi-hop demonstrations (`multihop_trajectory`, on training-region
questions), the warm start sometimes decomposes a question, as an instruct model does, and
RL sharpens what it can sometimes do; with none, it knows the protocol but not the multi-hop
strategy (search the bridge entity, then search again) that RL must find.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from kr1.data import QARecord
from kr1.retrieval.hits import Hit
from kr1.rollout.protocol import format_information, prompt_token_ids


@dataclass
class MaskedSequence:
    ids: list[int]
    mask: list[int]  # 1 where the model is trained to produce the token


def gold_trajectory(tokenizer: Any, question: QARecord, hits: Sequence[Hit], max_passage_chars: int,
                    template: str = "search_r1", miss: tuple[str, Sequence[Hit]] | None = None,
                    follow: Sequence[Hit] | None = None) -> MaskedSequence:
    """The search-then-answer trajectory for a single-hop question.

    With `miss` = (wrong query, its hits), the trajectory first searches the wrong entity, sees
    that the passages do not mention the one asked about, and searches again: a tool user's
    self-correction, not the multi-hop strategy (the second query comes from the question).
    With `follow` (the hits of a search for the answer), it looks up the name it has just read
    before answering: the habit a bridge question needs, on a question that needs one passage.
    """
    entity, evidence = question.supporting_titles[0], question.supporting_titles[-1]
    encode = lambda text: tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    info = lambda found: format_information([(h.title, h.text) for h in found], max_passage_chars)  # noqa: E731
    parts = [(prompt_token_ids(tokenizer, question.problem, template), 0)]
    if miss is not None:
        wrong, wrong_hits = miss
        parts += [(encode(f"<think>I need to look up {entity}.</think><search>{wrong}</search>"), 1),
                  (encode(info(wrong_hits)), 0),
                  (encode(f"<think>No passage is about {entity}.</think><search>{entity}</search>"), 1)]
    else:
        parts.append((encode(f"<think>I need to look up {entity}.</think><search>{entity}</search>"), 1))
    gold = question.golden_answers[0]
    said = evidence_sentence(hits, evidence, gold)
    if follow is not None:
        parts += [(encode(info(hits)), 0),
                  (encode(f"<think>{said} I look up {gold}.</think><search>{gold}</search>"), 1)]
        hits, said = follow, f"{gold} has a passage too."
    answer = f"<think>{said}</think><answer>{gold}</answer>"
    parts += [(encode(info(hits)), 0), (encode(answer) + [tokenizer.eos_token_id], 1)]
    ids = [t for part, _ in parts for t in part]
    mask = [m for part, m in parts for _ in part]
    return MaskedSequence(ids, mask)


def multihop_trajectory(tokenizer: Any, question: QARecord, hops: Sequence[Sequence[Hit]], max_passage_chars: int,
                        template: str = "search_r1") -> MaskedSequence:
    """A multi-hop demonstration: search each supporting title in turn, quote from each passage the sentence
    that names the next title (the last one: the sentence that states the answer), answer.

        <prompt> <think>I need to look up F.</think><search>F</search> <information>...</information>
        <think>F is a 1931 drama film directed by D. I need to look up D.</think><search>D</search>
        <information>...</information> <think>D was born in Tavrin.</think><answer>Tavrin</answer><eos>

    `hops[i]` are the passages the search for `question.supporting_titles[i]` returned. The next name is copied
    from the passage just read, as an instruct model does when it decomposes a question."""
    titles, gold = question.supporting_titles, question.golden_answers[0]
    encode = lambda text: tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    parts = [(prompt_token_ids(tokenizer, question.problem, template), 0),
             (encode(f"<think>I need to look up {titles[0]}.</think><search>{titles[0]}</search>"), 1)]
    for i, hits in enumerate(hops):
        parts.append((encode(format_information([(h.title, h.text) for h in hits], max_passage_chars)), 0))
        last = i + 1 == len(hops)
        said = evidence_sentence(hits, titles[i], gold if last else titles[i + 1])
        step = f"<think>{said}</think><answer>{gold}</answer>" if last else \
            f"<think>{said} I need to look up {titles[i + 1]}.</think><search>{titles[i + 1]}</search>"
        parts.append((encode(step) + ([tokenizer.eos_token_id] if last else []), 1))
    ids = [t for part, _ in parts for t in part]
    mask = [m for part, m in parts for _ in part]
    return MaskedSequence(ids, mask)


def evidence_sentence(hits: Sequence[Hit], entity: str, answer: str) -> str:
    """The sentence of the entity's passage that states the answer (quoted before answering)."""
    for hit in hits:
        if hit.title == entity:
            sentences = re.split(r"(?<=\.) ", hit.text)
            # the sentence naming the answer; else the first, which states what the entity is (a year, a birth)
            return next((s for s in sentences if answer in s), sentences[0])
    return "The passage says it."


def masked_lm_loss(model: Any, ids: torch.Tensor, attention: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over positions whose target has mask 1."""
    logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1].float()
    targets, weights = ids[:, 1:], mask[:, 1:].float()
    losses = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none")
    return (losses * weights.reshape(-1)).sum() / weights.sum().clamp(min=1.0)


def pad_batch(sequences: Sequence[MaskedSequence], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (ids, attention, mask), each (B, T)."""
    width = max(len(s.ids) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, :len(s.ids)] = torch.tensor(s.ids)
        attention[i, :len(s.ids)] = 1
        mask[i, :len(s.ids)] = torch.tensor(s.mask)
    return ids, attention, mask


def length_bucketed_batches(sequences: Sequence[MaskedSequence], batch_size: int, rng: random.Random,
                            pool: int = 8) -> list[list[MaskedSequence]]:
    """One epoch of batches whose sequences have similar lengths: shuffled, sorted by length within pools of
    `pool` batches, cut, and the batches shuffled. Padding to a random batch's longest sequence (a multi-hop
    demonstration is twice a single-hop one) wasted about half the warm start's compute."""
    order = list(sequences)
    rng.shuffle(order)
    batches = []
    for start in range(0, len(order), batch_size * pool):
        chunk = sorted(order[start:start + batch_size * pool], key=lambda s: len(s.ids))
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def train_sft(model: Any, sequences: Sequence[MaskedSequence], steps: int, pad_id: int, lr: float = 3e-3,
              batch_size: int = 16, seed: int = 0, progress: Any = None) -> list[float]:
    """AdamW with linear warm-up and decay on length-bucketed batches (epochs of the shuffled sequences);
    returns the loss per step."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.05, (steps - s) / max(1, steps - warmup))))
    model.train()
    losses: list[float] = []
    batches: list[list[MaskedSequence]] = []
    for _ in range(steps):
        if not batches:
            batches = length_bucketed_batches(sequences, batch_size, rng)
        ids, attention, mask = pad_batch(batches.pop(), pad_id)
        loss = masked_lm_loss(model, ids, attention, mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return losses
