"""`python -m kr1.search`: JSON and text output equal to the single index, question files, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from kr1.data import load_corpus, load_questions
from kr1.retrieval.scoring import search_index

K = 5


def test_search_cli_json_equals_single_index(index_factory, retrieval_queries):
    picked = retrieval_queries[:20] + ["born born born"]
    run = subprocess.run([sys.executable, "-m", "kr1.search", "--index", str(index_factory(3)), "--top-k", str(K),
                          "--json"], input="\n".join(picked) + "\n", capture_output=True, text=True, check=True)
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    expected = search_index(index_factory(1), picked, K)
    assert [line["query"] for line in lines] == picked
    for line, hits in zip(lines, expected):
        assert line["ids"] == [h.id for h in hits]
        np.testing.assert_allclose(line["scores"], [h.score for h in hits], rtol=0, atol=1e-5)
        assert line["titles"] == [h.title for h in hits]


def test_search_cli_text_output(index_factory, world_dir):
    title = load_corpus(world_dir / "corpus.jsonl")[10].title
    run = subprocess.run([sys.executable, "-m", "kr1.search", "--index", str(index_factory(2)), "--top-k", "2",
                          title, ""], capture_output=True, text=True, check=True)
    lines = run.stdout.splitlines()
    assert lines[0] == f"query: {title}" and title in lines[1] and lines[1].strip().startswith("1.")
    assert "no passage shares a term" in run.stdout


def test_search_cli_reports_missing_index_in_one_line(tmp_path):
    run = subprocess.run([sys.executable, "-m", "kr1.search", "--index", str(tmp_path / "none"), "q"],
                         capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.strip().startswith("error: ") and len(run.stderr.strip().splitlines()) == 1


def test_search_cli_reads_a_question_file(index_factory, world_dir):
    run = subprocess.run([sys.executable, "-m", "kr1.search", "--index", str(index_factory(2)), "--questions",
                          str(world_dir / "dev.jsonl"), "--limit", "2"], capture_output=True, text=True, check=True)
    dev = load_questions(world_dir / "dev.jsonl")
    assert [l for l in run.stdout.splitlines() if l.startswith("query: ")] == [f"query: {q.problem}" for q in dev[:2]]
