"""Retriever shard actors and their pool: the single-index top-k, edge queries, a shard killed mid-search."""

from __future__ import annotations

import pytest
import ray

from actors.retriever import RetrieverPool
from kr1.data import load_corpus
from kr1.retrieval.hits import merge_hits
from kr1.retrieval.index import BM25IndexError
from kr1.retrieval.scoring import search_index

K = 5


def _ranked(results):
    return [[(h.index, h.id, h.score) for h in hits] for hits in results]


@pytest.mark.parametrize("num_shards", [1, 2, 5])  # one, even and uneven splits
def test_pool_actors_equal_single_index(index_factory, retrieval_queries, num_shards):
    pool = RetrieverPool(index_factory(num_shards), num_shards=num_shards, top_k=K, num_cpus_per_shard=0.5)
    try:
        assert _ranked(pool.search(retrieval_queries)) == _ranked(search_index(index_factory(1), retrieval_queries, K))
    finally:
        pool.close()


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


def test_a_repeated_query_is_searched_once_and_answered_for_each(index_factory, retrieval_queries):
    """Samples of one prompt often send the same first query: each distinct query (as the tokenizer sees it:
    case and spacing aside) is searched once, and every copy gets its hits."""
    pool = RetrieverPool(index_factory(2), top_k=K, num_cpus_per_shard=0.5)
    first, second = retrieval_queries[0], retrieval_queries[1]
    batch = [first, first, "  " + first.upper() + " ", second, first.replace(" ", "   ")]
    try:
        hits = pool.search(batch)
        single = [pool.search([q]) for q in (first, second)]
    finally:
        pool.close()
    assert hits.unique == 2 and [s.unique for s in single] == [1, 1]
    assert _ranked(hits) == _ranked(single[0] * 3 + single[1] + single[0]) and hits[0]


def test_pool_rejects_shard_count_mismatch(index_factory):
    with pytest.raises(BM25IndexError, match="index has 3 shards but retriever.num_shards=4"):
        RetrieverPool(index_factory(3), num_shards=4)


@pytest.fixture(scope="module")
def own_retriever(ray_session, index_factory):
    """Shards these tests may kill (the session's retriever_pool keeps its restart budget)."""
    pool = RetrieverPool(index_factory(2), top_k=3, num_cpus_per_shard=0.5)
    yield pool
    pool.close()


def test_shards_show_their_role_and_index_in_the_dashboard(own_retriever):
    names = set(ray.util.list_named_actors())
    assert set(own_retriever.names) <= names
    tag = own_retriever.names[0].rsplit("-", 1)[1]
    assert own_retriever.names == [f"retriever-shard0-{tag}", f"retriever-shard1-{tag}"]


def test_a_retriever_shard_killed_mid_search_changes_no_episode(generator, questions, own_retriever, actor_process,
                                                                greedy_trace):
    calm = greedy_trace(generator, questions, own_retriever.search)
    killed = []  # (shard, its pid before the kill)

    def search_while_a_shard_dies(queries):
        shard = own_retriever.shards[len(killed) % 2]
        killed.append((shard, actor_process.pid(shard)))
        refs = own_retriever.search_refs(queries)  # the shards have the batch...
        ray.kill(shard, no_restart=False)  # ...and one of them dies
        return merge_hits(ray.get(refs), own_retriever.top_k)

    faulty = greedy_trace(generator, questions, search_while_a_shard_dies)
    assert killed, "the model never searched, so no shard was killed"
    assert faulty == calm
    for shard, pid in killed:
        actor_process.restarted(shard, pid)
