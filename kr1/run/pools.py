"""Start the actor pools that play episodes: the retriever shards and the rollout engines.

    retriever = start_retriever(cfg.retriever, index_dir)          # one RetrieverShard actor per shard, or with
                                                                   # retriever.backend=http a client of retriever.url
    engines = start_engines(cfg, model_path, retriever)            # rollout.num_engines RolloutEngine actors

The training run, the evaluation command and the benchmarks start them here, so that
kr1/run/ stays the one part of kr1 that reaches into actors/. Close both when done.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from actors.retriever import RetrieverPool
from actors.rollout_engine import RolloutEnginePool
from kr1.config import Config, RetrieverConfig
from kr1.retrieval.http_client import HttpRetriever

Retriever = RetrieverPool | HttpRetriever  # what engines search: `search(queries, k=None)`, `close()`


def start_retriever(cfg: RetrieverConfig, index_dir: str | Path, num_cpus_per_shard: float | None = None,
                    any_shards: bool = False) -> Retriever:
    """retriever.backend=http: a client of retriever.url, which answers once before this returns (`index_dir` is
    not searched); otherwise the index's shards as actors (`num_cpus_per_shard` overrides the config's share of a
    core; `any_shards`: as many as the index has, not retriever.num_shards)."""
    if cfg.backend == "http":
        return HttpRetriever(cfg.url, cfg.top_k, cfg.max_query_chars, cfg.http_max_concurrency, cfg.http_timeout_s,
                             cfg.http_retries, token=os.environ.get("KR1_RETRIEVER_TOKEN") or None)
    return start_index_pool(cfg, index_dir, num_cpus_per_shard, any_shards)


def check_retriever(cfg: RetrieverConfig) -> None:
    """With retriever.backend=http, the server answers now, or a one-line error names retriever.url: a run calls
    this before it writes anything (the pool's index is checked by `resolve_assets`)."""
    if cfg.backend == "http":
        start_retriever(cfg, "").close()


def start_index_pool(cfg: RetrieverConfig, index_dir: str | Path, num_cpus_per_shard: float | None = None,
                     any_shards: bool = False) -> RetrieverPool:
    """The index's shards as actors, whatever retriever.backend says (a decoy index, `kr1.serve`); scoring with
    retriever.backend's kernel, numba where that is http."""
    cpus = cfg.num_cpus_per_shard if num_cpus_per_shard is None else num_cpus_per_shard
    return RetrieverPool(index_dir, None if any_shards else cfg.num_shards, cfg.top_k,
                         "numba" if cfg.backend == "http" else cfg.backend, cfg.max_query_chars, cpus)


def start_engines(cfg: Config, model_path: str | Path, retriever: Retriever, placement: Any = None
                  ) -> RolloutEnginePool:
    """`rollout.num_engines` engines of `rollout.backend` serving `model_path`, searching `retriever`."""
    return RolloutEnginePool(cfg, str(model_path), retriever, placement)
