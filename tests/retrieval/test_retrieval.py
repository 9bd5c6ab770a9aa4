"""Sharded BM25 in-process: N shards give the single-index top-k, scored as bm25s scores."""

from __future__ import annotations

import shutil

import bm25s
import numpy as np
import pytest

from kr1.data import load_corpus
from kr1.retrieval.index import BM25IndexError, TokenizerSpec
from kr1.retrieval.scoring import ShardSearcher, search_index

pytestmark = pytest.mark.numerics  # BM25 scores against other implementations

K = 5


def _ranked(results):
    return [[(h.index, h.id, h.score) for h in hits] for hits in results]


@pytest.mark.parametrize("num_shards", [1, 2, 3, 5])
def test_sharded_top_k_equals_single_index(index_factory, retrieval_queries, num_shards):
    single = _ranked(search_index(index_factory(1), retrieval_queries, K))
    sharded = _ranked(search_index(index_factory(num_shards), retrieval_queries, K))
    assert sharded == single


def test_single_index_matches_bm25s_scoring(index_factory, world_dir, retrieval_queries):
    """Our index scores as bm25s does over the whole corpus (Lucene BM25), ranked score-then-index."""
    passages = load_corpus(world_dir / "corpus.jsonl")
    spec = TokenizerSpec()
    reference = bm25s.BM25(method="lucene")
    reference.index(spec.tokenize([p.contents for p in passages]), show_progress=False)
    ours = search_index(index_factory(3), retrieval_queries, K)
    for query, hits in zip(spec.tokenize(retrieval_queries), ours):
        scores = reference.get_scores(query) if query else np.zeros(len(passages))
        expected = sorted(np.flatnonzero(scores > 0), key=lambda i: (-scores[i], i))[:K]
        assert [h.index for h in hits] == expected
        np.testing.assert_allclose([h.score for h in hits], scores[expected], atol=1e-5)
        assert [h.id for h in hits] == [passages[i].id for i in expected]


def test_numba_and_numpy_backends_are_identical(index_factory, retrieval_queries):
    index = index_factory(2)
    assert _ranked(search_index(index, retrieval_queries, K, backend="numba")) == _ranked(
        search_index(index, retrieval_queries, K, backend="numpy"))


def test_shards_load_memory_mapped(index_factory):
    searcher = ShardSearcher(index_factory(2), 1)
    for name in ("data", "indices", "indptr"):
        assert isinstance(searcher.model.scores[name], np.memmap)
    assert searcher.offset > 0


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
