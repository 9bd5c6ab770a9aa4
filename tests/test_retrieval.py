"""Sharded BM25: N shards give the single-index top-k, in-process, through the actors and the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import bm25s
import numpy as np
import pytest

from actors.retriever import RetrieverPool
from kr1.bm25_index import BM25IndexError, TokenizerSpec
from kr1.bm25_search import ShardSearcher
from kr1.data import DataError, load_corpus, load_questions
from kr1.search import search_index
from pipelines.build_index import build_index
from pipelines.build_index import main as build_main

K = 5


@pytest.fixture(scope="module")
def queries(world_dir):
    problems = [q.problem for q in load_questions(world_dir / "train.jsonl")[:150]]
    titles = [p.title for p in load_corpus(world_dir / "corpus.jsonl")[::7]]
    # repeated terms, terms in every passage and terms in none exercise ties and empty results
    return problems + titles + ["born born born", "film", "zzzz qqqq", "the"]


def _ranked(results):
    return [[(h.index, h.id, h.score) for h in hits] for hits in results]


@pytest.mark.parametrize("num_shards", [1, 2, 3, 5])
def test_sharded_top_k_equals_single_index(index_factory, queries, num_shards):
    single = _ranked(search_index(index_factory(1), queries, K))
    sharded = _ranked(search_index(index_factory(num_shards), queries, K))
    assert sharded == single


def test_single_index_matches_bm25s_scoring(index_factory, world_dir, queries):
    """Our index scores as bm25s does over the whole corpus (Lucene BM25), ranked score-then-index."""
    passages = load_corpus(world_dir / "corpus.jsonl")
    spec = TokenizerSpec()
    reference = bm25s.BM25(method="lucene")
    reference.index(spec.tokenize([p.contents for p in passages]), show_progress=False)
    ours = search_index(index_factory(3), queries, K)
    for query, hits in zip(spec.tokenize(queries), ours):
        scores = reference.get_scores(query) if query else np.zeros(len(passages))
        expected = sorted(np.flatnonzero(scores > 0), key=lambda i: (-scores[i], i))[:K]
        assert [h.index for h in hits] == expected
        np.testing.assert_allclose([h.score for h in hits], scores[expected], atol=1e-5)
        assert [h.id for h in hits] == [passages[i].id for i in expected]


def test_numba_and_numpy_backends_are_identical(index_factory, queries):
    index = index_factory(2)
    assert _ranked(search_index(index, queries, K, backend="numba")) == _ranked(
        search_index(index, queries, K, backend="numpy"))


@pytest.mark.parametrize("num_shards", [1, 2, 3, 5])
def test_pool_actors_equal_single_index(index_factory, queries, num_shards):
    pool = RetrieverPool(index_factory(num_shards), num_shards=num_shards, top_k=K, num_cpus_per_shard=0.5)
    try:
        assert _ranked(pool.search(queries)) == _ranked(search_index(index_factory(1), queries, K))
    finally:
        pool.close()


def test_search_cli_json_equals_single_index(index_factory, queries):
    picked = queries[:20] + ["born born born"]
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


def test_shards_load_memory_mapped(index_factory):
    searcher = ShardSearcher(index_factory(2), 1)
    for name in ("data", "indices", "indptr"):
        assert isinstance(searcher.model.scores[name], np.memmap)
    assert searcher.offset > 0


def test_empty_and_very_long_queries(index_factory, world_dir):
    pool = RetrieverPool(index_factory(2), top_k=3, num_cpus_per_shard=0.5, max_query_chars=500)
    title = load_corpus(world_dir / "corpus.jsonl")[3].title
    try:
        results = pool.search(["", "   ", "?!;", "of the a", title + " " + "x" * 200_000,
                               "born " * 50_000, "\x00\udcff" * 100])
        assert pool.search([]) == []
    finally:
        pool.close()
    assert results[0] == results[1] == results[2] == results[3] == []
    assert results[4][0].title == title
    assert len(results[5]) == 3
    assert results[6] == []


def test_pool_rejects_shard_count_mismatch(index_factory):
    with pytest.raises(BM25IndexError, match="index has 3 shards but retriever.num_shards=4"):
        RetrieverPool(index_factory(3), num_shards=4)


def test_missing_and_incomplete_index(index_factory, tmp_path):
    with pytest.raises(BM25IndexError, match="index directory not found"):
        ShardSearcher(tmp_path / "nowhere", 0)
    broken = tmp_path / "broken"
    shutil.copytree(index_factory(2), broken)
    (broken / "manifest.json").unlink()
    with pytest.raises(BM25IndexError, match="incomplete"):
        ShardSearcher(broken, 0)
    shutil.copytree(index_factory(2), tmp_path / "no_shard")
    shutil.rmtree(tmp_path / "no_shard" / "shard_001")
    with pytest.raises(BM25IndexError, match="shard_001: shard files missing"):
        ShardSearcher(tmp_path / "no_shard", 1)


def test_search_cli_reports_missing_index_in_one_line(tmp_path):
    run = subprocess.run([sys.executable, "-m", "kr1.search", "--index", str(tmp_path / "none"), "q"],
                         capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.strip().startswith("error: ") and len(run.stderr.strip().splitlines()) == 1


def test_build_rejects_empty_corpus_and_too_many_shards(ray_session, tmp_path, world_dir):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="corpus is empty"):
        build_index(empty, tmp_path / "out", 2, progress=False)
    tiny = tmp_path / "tiny.jsonl"
    tiny.write_text('{"id": "a", "text": "one passage"}\n')
    with pytest.raises(ValueError, match="2 shards for 1 documents"):
        build_index(tiny, tmp_path / "out", 2, progress=False)
    assert not (tmp_path / "out").exists()


def test_build_cli_replaces_an_index_atomically(ray_session, tmp_path, world_dir, capsys):
    out = tmp_path / "index"
    build_main(["--corpus", str(world_dir / "corpus.jsonl"), "--out", str(out), "--shards", "2"])
    build_main(["--corpus", str(world_dir / "corpus.jsonl"), "--out", str(out), "--shards", "3"])
    assert "into 3 shards" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "shard_000", "shard_001", "shard_002"]
    assert [p.name for p in tmp_path.iterdir()] == ["index"]


def test_search_cli_reads_a_question_file(index_factory, world_dir):
    run = subprocess.run([sys.executable, "-m", "kr1.search", "--index", str(index_factory(2)), "--questions",
                          str(world_dir / "dev.jsonl"), "--limit", "2"], capture_output=True, text=True, check=True)
    dev = load_questions(world_dir / "dev.jsonl")
    assert [l for l in run.stdout.splitlines() if l.startswith("query: ")] == [f"query: {q.problem}" for q in dev[:2]]
