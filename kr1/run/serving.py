"""kr1's sharded retriever pool behind Search-R1's HTTP protocol, as a Ray Serve application.

    url = serve_index(RetrieverConfig(num_shards=2), index_dir, host="127.0.0.1", port=8000, token=None)
    # POST {url} {"queries": [...], "topk": 3, "return_scores": true}
    #   -> {"result": [[{"document": {"id", "contents"}, "score"}, ...], ...]}
    stop_serving()

One `RetrieveEndpoint` replica owns a `RetrieverPool` (its shard actors are the replica's children, so they live
in Serve's namespace and stop with it) and answers `POST /retrieve` as Search-R1's retrieval_server.py does:
documents are wiki-18 rows (`contents` = the quoted title line, then the passage), scores are BM25's. A request's
repeated queries are searched once (the pool's `search_async`), and the replica takes many requests at a time,
awaiting the shards on its event loop. With a token, a request without `Authorization: Bearer <token>`
gets 401. Serve's proxy binds `host` (127.0.0.1 unless told otherwise: the server has no other access control).
"""

from __future__ import annotations

import hmac
import socket
from pathlib import Path
from typing import Any

from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from kr1.config import RetrieverConfig
from kr1.retrieval.http_client import document
from kr1.run.pools import start_index_pool

APP_NAME = "kr1-retriever"
MAX_TOP_K = 100  # a request may ask for more passages than the config's top_k, not for the whole corpus


class RetrieveEndpoint:
    """`POST /retrieve` over one RetrieverPool; a plain class that `serve.deployment` wraps in `serve_index`."""

    def __init__(self, cfg: RetrieverConfig, index_dir: str, token: str | None) -> None:
        self.pool = start_index_pool(cfg, index_dir)
        self.token = token

    async def __call__(self, request: Request) -> JSONResponse:
        if request.url.path.rstrip("/") != "/retrieve":
            return JSONResponse({"error": "not found: POST /retrieve"}, status_code=404)
        if request.method != "POST":
            return JSONResponse({"error": "POST /retrieve"}, status_code=405)
        if self.token and not hmac.compare_digest(request.headers.get("authorization", ""), f"Bearer {self.token}"):
            return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401)
        try:
            body = await request.json()
            queries, k, scores = _request_fields(body, self.pool.top_k)
        except ValueError as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        hits = await self.pool.search_async(queries, k)
        return JSONResponse({"result": [[{"document": document(h), "score": h.score} if scores else document(h)
                                         for h in row] for row in hits]})


def _request_fields(body: Any, default_k: int) -> tuple[list[str], int, bool]:
    """(queries, topk, return_scores) of a request body, or a ValueError saying what is wrong."""
    if not isinstance(body, dict) or not isinstance(body.get("queries"), list) \
            or not all(isinstance(q, str) for q in body["queries"]):
        raise ValueError('the body must be {"queries": [strings], "topk": k, "return_scores": bool}')
    k = default_k if body.get("topk") is None else body["topk"]
    if not isinstance(k, int) or isinstance(k, bool) or not 0 < k <= MAX_TOP_K:
        raise ValueError(f"topk must be an integer in 1..{MAX_TOP_K}, got {k!r}")
    return body["queries"], k, bool(body.get("return_scores", False))


def serve_index(cfg: RetrieverConfig, index_dir: str | Path, host: str = "127.0.0.1", port: int = 8000,
                token: str | None = None, max_ongoing_requests: int = 64) -> str:
    """Start Serve on `host:port` (in the connected Ray) with the index's pool behind it; returns the endpoint's
    URL once it answers. One application per Ray cluster: Serve binds one port."""
    serve.start(http_options={"host": host, "port": port})
    deployment = serve.deployment(RetrieveEndpoint, name="RetrieveEndpoint", num_replicas=1,
                                  max_ongoing_requests=max_ongoing_requests, ray_actor_options={"num_cpus": 0})
    serve.run(deployment.bind(cfg, str(index_dir), token), name=APP_NAME, route_prefix="/")
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/retrieve"


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (for tests and benchmarks)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def stop_serving() -> None:
    """Stop the application and Serve's proxy and controller."""
    serve.shutdown()
