"""The synthetic world: deterministic, and every question answerable from the passages it names."""

from __future__ import annotations

import json
import re

import pytest

from kr1.data import load_corpus, load_questions
from kr1.world.names import MAX_PEOPLE, entity_counts, max_people, name_space
from kr1.world.synthetic import HELD_OUT_PER_TYPE, generate
from pipelines.synthetic_world import main

MULTI_HOP = {"compositional", "comparison", "inference", "bridge_comparison"}


def _files(directory):
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    generate(tmp_path / "a", seed=3, people=60)
    generate(tmp_path / "b", seed=3, people=60)
    generate(tmp_path / "c", seed=4, people=60)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert _files(tmp_path / "a")["corpus.jsonl"] != _files(tmp_path / "c")["corpus.jsonl"]


def test_splits_and_types(world_dir):
    splits = {s: load_questions(world_dir / f"{s}.jsonl") for s in ("train", "dev", "test")}
    assert all(splits.values())
    assert len(splits["train"]) > len(splits["dev"]) + len(splits["test"])
    ids = [q.id for rows in splits.values() for q in rows]
    assert len(ids) == len(set(ids))
    assert {q.type for q in splits["train"]} == MULTI_HOP
    problems = [q.problem for rows in splits.values() for q in rows]
    assert len(problems) == len(set(problems)), "a question appears in two splits"


def _passages_by_title(world_dir):
    return {p.title: p for p in load_corpus(world_dir / "corpus.jsonl")}


def test_every_multi_hop_question_is_answerable_and_needs_its_passages(world_dir):
    by_title = _passages_by_title(world_dir)
    for split in ("train", "dev", "test"):
        for q in load_questions(world_dir / f"{split}.jsonl"):
            answer = q.golden_answers[0]
            assert len(set(q.supporting_titles)) >= 2, q
            support = [by_title[t] for t in q.supporting_titles]  # KeyError = names a missing passage
            if q.type in ("compositional", "inference"):
                first, last = support
                assert first.title in q.problem and last.title not in q.problem
                # the bridge entity links the hops, and only the second passage holds the answer
                assert last.title in first.text, q
                assert answer in last.text and answer not in first.text, q
                assert answer not in q.problem
            elif q.type == "comparison":
                a, b = support
                assert a.title in q.problem and b.title in q.problem and answer in (a.title, b.title)
                years = [int(re.search(r"\b(1\d{3}|20\d{2})\b", p.text).group()) for p in support]
                assert years[0] != years[1]
            else:  # bridge comparison: two films, then their two directors
                film_a, film_b, director_a, director_b = support
                assert director_a.title in film_a.text and director_b.title in film_b.text
                assert answer in (film_a.title, film_b.title)
                assert director_a.title not in q.problem and director_b.title not in q.problem


def _shared_titles(world_dir) -> set[str]:
    """Cities and countries: shared values that every region's passages may name."""
    return {p.title for p in load_corpus(world_dir / "corpus.jsonl")
            if p.text.startswith((f"{p.title} is a city in ", f"{p.title} is a country."))}


def _entities(questions, names: set[str]) -> set[str]:
    """The people, films and organisations a file's questions name: in the question, the answer or the
    supporting titles."""
    found = set()
    for q in questions:
        text = " ".join([q.problem, *q.golden_answers, *q.supporting_titles])
        found |= {name for name in names if name in text}
    return found


def test_dev_and_test_questions_ask_about_entities_no_training_question_or_warm_start_example_names(world_dir):
    """Split by entity: a held-out question's people, films and organisations (and, for the entities it names,
    their facts) are in no training question and no warm-start example; cities and countries may recur."""
    shared = _shared_titles(world_dir)
    names = {p.title for p in load_corpus(world_dir / "corpus.jsonl")} - shared
    seen = _entities(load_questions(world_dir / "train.jsonl") + load_questions(world_dir / "single_hop.jsonl"),
                     names)
    assert len(seen) > 100
    for split in ("dev", "test", "single_hop_test"):
        questions = load_questions(world_dir / f"{split}.jsonl")
        named = _entities(questions, names)
        assert len(named) > 20, split
        assert not named & seen, (split, sorted(named & seen)[:5])
    dev, test = (_entities(load_questions(world_dir / f"{s}.jsonl"), names) for s in ("dev", "test"))
    assert not dev & test
    # shared values do recur: a held-out person is born in a city that training questions also name
    cities = {q.golden_answers[0] for q in load_questions(world_dir / "dev.jsonl")} & shared
    assert cities & {q.golden_answers[0] for q in load_questions(world_dir / "train.jsonl")}


def test_held_out_splits_measure_every_type_on_a_similar_count(world_dir):
    from collections import Counter

    for split in ("dev", "test"):
        counts = Counter(q.type for q in load_questions(world_dir / f"{split}.jsonl"))
        assert set(counts) == MULTI_HOP and max(counts.values()) <= HELD_OUT_PER_TYPE, (split, counts)
        assert min(counts.values()) >= 0.3 * max(counts.values()), (split, counts)


def test_names_are_invented_and_unique(world_dir):
    titles = [p.title for p in load_corpus(world_dir / "corpus.jsonl")]
    assert len(titles) == len(set(titles))
    common = {"John", "Mary", "London", "Paris", "France", "Smith"}
    assert not common & {w for t in titles for w in t.split()}


def test_single_hop_questions_are_answered_by_one_passage(world_dir):
    by_title = _passages_by_title(world_dir)
    for q in load_questions(world_dir / "single_hop.jsonl") + load_questions(world_dir / "single_hop_test.jsonl"):
        entity, evidence = q.supporting_titles[0], q.supporting_titles[-1]
        assert entity in q.problem
        assert q.golden_answers[0] in by_title[evidence].text and entity in by_title[evidence].text


def test_cli_writes_manifest(tmp_path, capsys):
    main(["--out", str(tmp_path / "w"), "--seed", "1", "--people", "40"])
    manifest = json.loads((tmp_path / "w" / "manifest.json").read_text())
    assert manifest["seed"] == 1 and manifest["passages"] == len(load_corpus(tmp_path / "w" / "corpus.jsonl"))
    assert "passages" in capsys.readouterr().out


def test_too_small_world_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--people"):
        generate(tmp_path / "w", people=5)


def test_the_largest_world_builds_and_a_larger_one_is_refused_in_one_line(tmp_path, one_line_error):
    """The name inventories hold MAX_PEOPLE people (organisation names run out first); a larger --people, as the
    bench's old 60,000-person corpus asked, stops before anything is built, stating the limit."""
    manifest = generate(tmp_path / "largest", people=MAX_PEOPLE)
    assert manifest["people"] == MAX_PEOPLE and MAX_PEOPLE == 4007  # the figure the README states
    line = one_line_error(lambda: main(["--out", str(tmp_path / "w"), "--people", "60000"]))
    assert "--people 60000" in line and "at most 4,007 people" in line and "organisation names" in line, line
    assert not (tmp_path / "w").exists()
    # beside the largest world (--avoid) its names are all taken: no further world of 20 fits
    line = one_line_error(lambda: main(["--out", str(tmp_path / "w"), "--people", "500",
                                        "--avoid", str(tmp_path / "largest")]))
    assert f"no synthetic world fits beside {tmp_path / 'largest'}" in line, line
    assert "800 of them used by that world" in line, line


def test_max_people_is_what_the_names_hold():
    space = name_space()
    for beside in (0, 500, 3000):
        limit = max_people(beside)
        taken = entity_counts(beside) if beside else dict.fromkeys(space, 0)
        assert all(n + taken[k] <= space[k] for k, n in entity_counts(limit).items())
        assert any(n + taken[k] > space[k] for k, n in entity_counts(limit + 1).items())
    assert max_people(500) >= 3000  # the default's practice world (3,000 people) beside its world (500)
