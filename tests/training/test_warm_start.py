"""The warm start's gold trajectories: what the model is taught to write, and what it only reads."""

from __future__ import annotations

import pytest

from kr1.data import QARecord
from kr1.retrieval.hits import Hit
from kr1.rollout.protocol import parse_action
from kr1.training.warm_start import gold_trajectory
from pipelines.bootstrap_model import train_tokenizer, world_texts

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
