"""The HTTP retriever client against a stub server of Search-R1's protocol: hits parsed from wiki-18 rows, a
batch's repeated queries sent once, retries with back-off, timeouts, the concurrency limit, and one-line errors
naming the URL. No Ray; the real server (kr1.serve) is tested in tests/run/test_serving.py."""

from __future__ import annotations

import asyncio
import json
import pickle
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import pytest

from kr1.retrieval.hits import Hit
from kr1.retrieval.http_client import HttpRetriever, RetrieverHTTPError, document
from kr1.rollout.agent_loop import QueryBatcher


def passages(query: str, k: int) -> list[dict[str, Any]]:
    """The stub's answer for one query: k documents named after it, scores falling."""
    return [{"document": {"id": f"{query}-{i}", "contents": f'"Title {query} {i}"\nText of {query}, {i}.'},
             "score": 10.0 - i} for i in range(k)]


class Stub:
    """A threaded HTTP server whose answer to each POST is `respond(body) -> (status, payload, delay_s)`."""

    def __init__(self, respond: Callable[[dict], tuple[int, Any, float]]) -> None:
        self.bodies: list[dict] = []
        self.in_flight = self.most_in_flight = 0
        lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    stub.bodies.append(body)
                    stub.in_flight += 1
                    stub.most_in_flight = max(stub.most_in_flight, stub.in_flight)
                status, payload, delay = respond(body)
                time.sleep(delay)
                with lock:
                    stub.in_flight -= 1
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client timed out and hung up
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/retrieve"
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub_server():
    made: list[Stub] = []

    def make(respond: Callable[[dict], tuple[int, Any, float]] | None = None) -> Stub:
        ok = lambda body: (200, {"result": [passages(q, body["topk"]) for q in body["queries"]]}, 0.0)  # noqa: E731
        made.append(Stub(respond or ok))
        return made[-1]

    yield make
    for stub in made:
        stub.close()


def test_hits_come_from_wiki18_rows_and_repeated_queries_go_once(stub_server):
    stub = stub_server()
    client = HttpRetriever(stub.url, top_k=2)
    hits = client.search(["alpha", "beta", "alpha"])
    assert stub.bodies[-1] == {"queries": ["alpha", "beta"], "topk": 2, "return_scores": True}
    assert hits.unique == 2 and len(hits) == 3 and hits[0] == hits[2]
    assert hits[1][0] == Hit(-1, "beta-0", "Title beta 0", "Text of beta, 0.", 10.0)
    assert [h.score for h in client.search(["gamma"], k=3)[0]] == [10.0, 9.0, 8.0]
    assert client.search([]) == []
    # a hit written back as the protocol's document reads back the same
    assert document(Hit(5, "7", 'A "quoted" title', "Some text.", 1.0)) == {
        "id": "7", "contents": '"A "quoted" title"\nSome text.'}


def test_answers_without_scores_and_title_text_rows_are_read(stub_server):
    def rows(body: dict) -> tuple[int, Any, float]:
        return 200, {"result": [[{"id": "1", "title": "T", "text": "x"}] for _ in body["queries"]]}, 0.0

    hits = HttpRetriever(stub_server(rows).url).search(["q"])
    assert hits[0] == [Hit(-1, "1", "T", "x", 0.0)]


def test_failed_requests_are_retried_with_backoff(stub_server):
    calls = []

    def flaky(body: dict) -> tuple[int, Any, float]:
        calls.append(time.perf_counter())
        if len(calls) in (2, 3):  # the probe passes, then two failures
            return 503, {"error": "busy"}, 0.0
        return 200, {"result": [passages(q, 1) for q in body["queries"]]}, 0.0

    client = HttpRetriever(stub_server(flaky).url, retries=3, backoff_s=0.05)
    assert client.search(["q"])[0][0].id == "q-0"
    assert len(calls) == 4
    assert calls[3] - calls[2] >= 0.09 > 0.0 and calls[2] - calls[1] >= 0.04  # pauses double


def test_a_server_failing_mid_run_is_one_line_naming_the_url(stub_server):
    calls = []

    def dies(body: dict) -> tuple[int, Any, float]:
        calls.append(1)
        return (200, {"result": [[]]}, 0.0) if len(calls) == 1 else (500, {"error": "boom"}, 0.0)

    stub = stub_server(dies)
    client = HttpRetriever(stub.url, retries=2, backoff_s=0.01)
    with pytest.raises(RetrieverHTTPError) as error:
        client.search(["q"])
    assert str(error.value).startswith(f"retriever.url {stub.url}: HTTP 500 after 3 tries")
    assert "\n" not in str(error.value) and len(calls) == 4


def test_a_slow_server_times_out(stub_server):
    slow = lambda body: (200, {"result": [[] for _ in body["queries"]]}, 0 if body["queries"] == ["kr1 probe"] else 1)
    client = HttpRetriever(stub_server(slow).url, timeout_s=0.2, retries=1, backoff_s=0.01)
    with pytest.raises(RetrieverHTTPError, match=r"no answer within 0\.2 s after 2 tries"):
        client.search(["q"])


def test_an_unreachable_server_stops_the_start():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RetrieverHTTPError, match=rf"^retriever.url http://127.0.0.1:{port}/retrieve: unreachable"):
        HttpRetriever(f"http://127.0.0.1:{port}/retrieve")


@pytest.mark.parametrize("answer,problem", [
    ({"hits": []}, "not JSON with a 'result' list"),
    ({"result": [[], []]}, r"one list per query \(1\)"),
    ({"result": [[{"document": {"contents": "x"}, "score": 1}]]}, r"result\[0\]\[0\]: missing field 'id'"),
])
def test_answers_outside_the_protocol_are_refused(stub_server, answer, problem):
    stub = stub_server(lambda body: (200, answer, 0.0))
    with pytest.raises(RetrieverHTTPError, match=problem):
        HttpRetriever(stub.url)


def test_requests_in_flight_stay_within_the_limit_and_the_client_pickles(stub_server):
    stub = stub_server(lambda body: (200, {"result": [passages(q, 1) for q in body["queries"]]}, 0.05))
    client = pickle.loads(pickle.dumps(HttpRetriever(stub.url, max_concurrency=2)))  # as an engine receives it
    threads = [threading.Thread(target=client.search, args=([f"q{i}"],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(stub.bodies) == 9 and stub.most_in_flight == 2


def test_the_query_batcher_batches_onto_the_client(stub_server):
    stub = stub_server()
    client = HttpRetriever(stub.url)

    async def play() -> list:
        batcher = QueryBatcher(client.search, max_batch=4, flush_ms=50)
        return await asyncio.gather(*(batcher.search(q) for q in ["a", "b", "a", "c", "d"]))

    results = asyncio.run(play())
    assert [r.batch_size for r in results] == [4, 4, 4, 4, 1] and [r.batch_unique for r in results[:4]] == [3] * 4
    assert [body["queries"] for body in stub.bodies[1:]] == [["a", "b", "c"], ["d"]]
    assert results[2].hits == results[0].hits and results[3].hits[0].id == "c-0"
