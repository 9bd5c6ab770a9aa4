"""The warm start's gold trajectories: what the model is taught to write, and what it only reads."""

from __future__ import annotations

import pytest

from kr1.data import QARecord
from kr1.retrieval.hits import Hit
from kr1.rollout.protocol import parse_action
from kr1.training.bootstrap import train_tokenizer, world_texts
from kr1.training.warm_start import gold_trajectory, multihop_trajectory

pytestmark = pytest.mark.numerics  # what a trained model says


@pytest.fixture(scope="module")
def tokenizer(world_dir):
    return train_tokenizer(world_texts(world_dir), 2048)


QUESTION = QARecord("single-1", "Who directed the film The Amber Lantern?", ["Arlen Voss"], "single_hop",
                    ["The Amber Lantern"])
FILM = [Hit(0, "p0", "The Amber Lantern", "The Amber Lantern is a 1931 drama directed by Arlen Voss.", 9.0)]
DIRECTOR = [Hit(1, "p1", "Arlen Voss", "Arlen Voss is a painter born in Tavrin.", 8.0)]


def _written(tokenizer, seq):
    """The model's own segments (mask 1), decoded one by one, and the text it only reads (mask 0)."""
    segments, current, read = [], [], []
    for token, m in zip(seq.ids, seq.mask):
        if m:
            current.append(token)
        elif current:
            segments.append(tokenizer.decode(current))
            current = []
        if not m:
            read.append(token)
    segments += [tokenizer.decode(current)] if current else []
    return segments, tokenizer.decode(read)


def test_the_plain_trajectory_searches_the_entity_and_answers(tokenizer):
    segments, read = _written(tokenizer, gold_trajectory(tokenizer, QUESTION, FILM, 600, "compact"))
    actions = [parse_action(s) for s in segments]
    assert [(a.kind, a.content) for a in actions] == [("search", "The Amber Lantern"), ("answer", "Arlen Voss")]
    assert "directed by Arlen Voss" in segments[1] and "directed by Arlen Voss" in read


def test_a_follow_up_trajectory_looks_up_the_name_it_read_before_answering(tokenizer):
    seq = gold_trajectory(tokenizer, QUESTION, FILM, 600, "compact", follow=DIRECTOR)
    segments, read = _written(tokenizer, seq)
    actions = [parse_action(s) for s in segments]
    assert [(a.kind, a.content) for a in actions] == [("search", "The Amber Lantern"), ("search", "Arlen Voss"),
                                                      ("answer", "Arlen Voss")]
    assert "directed by Arlen Voss" in segments[1]  # it quotes the sentence where it read the name
    assert "born in Tavrin" in read and "born in Tavrin" not in "".join(segments)  # passages are never trained on


def test_a_multihop_demonstration_searches_each_title_and_copies_the_next_name_from_the_passage(tokenizer):
    question = QARecord("train-1", "Where was the director of the film The Amber Lantern born?", ["Tavrin"],
                        "compositional", ["The Amber Lantern", "Arlen Voss"])
    seq = multihop_trajectory(tokenizer, question, [FILM, DIRECTOR], 600, "compact")
    segments, read = _written(tokenizer, seq)
    actions = [parse_action(s) for s in segments]
    assert [(a.kind, a.content) for a in actions] == [("search", "The Amber Lantern"), ("search", "Arlen Voss"),
                                                      ("answer", "Tavrin")]
    assert "directed by Arlen Voss" in segments[1]  # the bridge name, quoted from the first passage
    assert "born in Tavrin" in segments[2]  # the answer's sentence, quoted from the second
    assert read.count("<information>") == 2 and "Tavrin" not in segments[0] + segments[1]
    assert seq.ids[-1] == tokenizer.eos_token_id and seq.mask[-1] == 1


def test_length_bucketed_batches_cover_every_example_once_and_pad_less_than_random_batches():
    import random

    from kr1.training.warm_start import MaskedSequence, length_bucketed_batches

    rng = random.Random(0)
    sequences = [MaskedSequence([i] * rng.choice([200, 400]), [1] * 1) for i in range(300)]
    batches = length_bucketed_batches(sequences, 16, random.Random(1))
    assert sorted(s.ids[0] for batch in batches for s in batch) == list(range(300))
    assert all(1 <= len(batch) <= 16 for batch in batches)
    padded = sum(len(batch) * max(len(s.ids) for s in batch) for batch in batches)
    shuffled = random.Random(2).sample(sequences, len(sequences))
    random_padded = sum(16 * max(len(s.ids) for s in shuffled[i:i + 16]) for i in range(0, 300, 16))
    assert padded < 0.85 * random_padded, (padded, random_padded)
