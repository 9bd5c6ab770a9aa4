"""kr1's pool behind Ray Serve in Search-R1's protocol: a plain POST gets the pool's hits, the token is enforced,
and `retriever.backend=http` against the server plays the same episodes as the in-process pool."""

from __future__ import annotations

import socket

import pytest
import requests

from kr1.config import RetrieverConfig, load_config
from kr1.retrieval.http_client import RetrieverHTTPError
from kr1.run.pools import check_retriever, start_retriever

TOKEN = "test-token"


@pytest.fixture(scope="module")
def served(ray_session, index_factory):
    """The session world's 2-shard index served on a free port, with a bearer token; its endpoint URL."""
    from kr1.run.serving import serve_index, stop_serving

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = serve_index(RetrieverConfig(num_shards=2, num_cpus_per_shard=0.5), index_factory(2), port=port, token=TOKEN)
    yield url
    stop_serving()


def test_a_plain_post_in_search_r1_format_gets_the_pools_hits(served, retriever_pool, retrieval_queries):
    queries = retrieval_queries[:20] + retrieval_queries[:3]  # repeats searched once, answered for each
    response = requests.post(served, json={"queries": queries, "topk": 3, "return_scores": True},
                             headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    assert response.status_code == 200
    result = response.json()["result"]
    expected = retriever_pool.search(queries, 3)
    assert [[item["document"]["id"] for item in row] for row in result] == [[h.id for h in row] for row in expected]
    assert [[item["score"] for item in row] for row in result] == \
        [[pytest.approx(h.score, rel=1e-6) for h in row] for row in expected]
    first = expected[0][0]
    assert result[0][0]["document"]["contents"] == f'"{first.title}"\n{first.text}'  # a wiki-18 row


def test_requests_without_the_token_or_outside_the_protocol_are_refused(served):
    body = {"queries": ["who directed the amber lantern"], "topk": 2}
    assert requests.post(served, json=body, timeout=60).status_code == 401
    assert requests.post(served, json=body, headers={"Authorization": "Bearer wrong"}, timeout=60).status_code == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    no_scores = requests.post(served, json=body, headers=auth, timeout=60).json()["result"]
    assert len(no_scores[0]) == 2 and set(no_scores[0][0]) == {"id", "contents"}  # return_scores false: rows
    assert requests.post(served, json={"queries": "not a list"}, headers=auth, timeout=60).status_code == 400
    assert requests.post(served, json={"queries": ["q"], "topk": 0}, headers=auth, timeout=60).status_code == 400


def test_the_http_backend_plays_the_same_episodes_as_the_pool(served, retriever_pool, generator, questions,
                                                              greedy_trace, monkeypatch):
    monkeypatch.setenv("KR1_RETRIEVER_TOKEN", TOKEN)
    cfg = load_config("default", ["retriever.backend=http", f"retriever.url={served}"]).retriever
    client = start_retriever(cfg, index_dir="")  # no local index is searched
    in_process = greedy_trace(generator, questions, retriever_pool.search)
    assert any(queries for _, _, _, queries, *_ in in_process)  # the episodes do search
    assert greedy_trace(generator, questions, client.search) == in_process


def test_a_run_stops_before_writing_when_the_server_does_not_answer(served, monkeypatch):
    monkeypatch.delenv("KR1_RETRIEVER_TOKEN", raising=False)
    cfg = load_config("default", ["retriever.backend=http", f"retriever.url={served}"]).retriever
    with pytest.raises(RetrieverHTTPError, match="HTTP 401 .*KR1_RETRIEVER_TOKEN"):
        check_retriever(cfg)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/retrieve"
    cfg = load_config("default", ["retriever.backend=http", f"retriever.url={dead}"]).retriever
    with pytest.raises(RetrieverHTTPError, match=f"^retriever.url {dead}: unreachable"):
        check_retriever(cfg)
    check_retriever(load_config("default").retriever)  # the pool's index is resolve_assets' to check


def test_a_training_step_searches_the_server(served, run_overrides, tiny_model, tmp_path, monkeypatch):
    """The engines (Ray actors) hold the client and batch into it; the step logs search/*, and a dead server
    stops the run in one line before its directory exists."""
    from kr1.run.loop import train

    monkeypatch.setenv("KR1_RETRIEVER_TOKEN", TOKEN)  # the driver reads it; the engines get the client pickled
    settings = {"retriever.backend": "http", "retriever.url": served, "trainer.total_steps": 1,
                "trainer.eval_every": 0, "trainer.checkpoint_every": 0, "rollout.mode": "agent"}
    [logged] = train(load_config("default", run_overrides(tmp_path / "run", tiny_model, **settings)), quiet=True)
    assert logged["search/batch_size"] >= 1 and logged["search/queries_per_s"] > 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        settings["retriever.url"] = dead = f"http://127.0.0.1:{s.getsockname()[1]}/retrieve"
    with pytest.raises(RetrieverHTTPError, match=f"^retriever.url {dead}: unreachable"):
        train(load_config("default", run_overrides(tmp_path / "dead", tiny_model, **settings)), quiet=True)
    assert not (tmp_path / "dead").exists()
