"""Serve a kr1 BM25 index over HTTP in Search-R1's retrieval protocol, for any trainer that expects one.

    python -m kr1.serve --index ~/.cache/kr1/index --port 8000           # until Ctrl-C
    KR1_RETRIEVER_TOKEN=secret python -m kr1.serve --index DIR           # requests need the bearer token
    curl -s localhost:8000/retrieve -d '{"queries": ["who directed the amber lantern"], "topk": 3,
                                         "return_scores": true}'

The sharded retriever pool (one actor per shard) runs behind Ray Serve in a local Ray, or in the cluster of
RAY_ADDRESS. It answers `POST /retrieve` as Search-R1's search_r1/search/retrieval_server.py does, so Search-R1,
verl's SearchTool, and kr1 itself (`retriever.backend=http retriever.url=http://127.0.0.1:8000/retrieve`) search
it. It binds 127.0.0.1 unless `--host` says otherwise; with `--token` (or $KR1_RETRIEVER_TOKEN) a request
without `Authorization: Bearer <token>` gets 401.
"""

from __future__ import annotations

import argparse
import os
import socket
import time
from pathlib import Path
from typing import Sequence

from kr1.cluster import ensure_ray
from kr1.config import RetrieverConfig
from kr1.errors import UserError, run_cli
from kr1.retrieval.index import check_index


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--index", required=True, type=Path, help="index directory (pipelines.build_index)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--token", default=os.environ.get("KR1_RETRIEVER_TOKEN") or None,
                        help="bearer token requests must carry (default $KR1_RETRIEVER_TOKEN; none: open)")
    parser.add_argument("--top-k", type=int, default=3, help="passages per query when a request gives no topk")
    parser.add_argument("--backend", choices=("numba", "numpy"), default="numba", help="BM25 scoring kernel")
    parser.add_argument("--num-cpus-per-shard", type=float, default=1.0)
    parser.add_argument("--max-query-chars", type=int, default=1000)
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error("--top-k must be at least 1")
    manifest = check_index(args.index, None)  # a missing or broken index is one line, before Ray starts
    cfg = RetrieverConfig(num_shards=manifest.num_shards, top_k=args.top_k, backend=args.backend,
                          max_query_chars=args.max_query_chars, num_cpus_per_shard=args.num_cpus_per_shard)
    check_port(args.host, args.port, f"cannot serve {args.index}")  # Serve's proxy would fail in its own log
    ensure_ray()
    from kr1.run.serving import serve_index, stop_serving  # Serve's imports only once the input is good

    try:
        url = serve_index(cfg, args.index.resolve(), args.host, args.port, args.token)
        print(f"serving {args.index} ({manifest.num_docs} passages, {manifest.num_shards} shards) at {url}"
              f"{' (bearer token required)' if args.token else ''}; Ctrl-C stops", flush=True)
        while True:
            time.sleep(3600)
    finally:
        stop_serving()


def check_port(host: str, port: int, what: str) -> None:
    """`host:port` can be bound here, or a one-line UserError saying why not."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as e:
            raise UserError(f"{what} on {host}:{port}: {e.strerror or e}") from None


if __name__ == "__main__":
    run_cli(main)
