"""Start the actor pools that play episodes: the retriever shards and the rollout engines.

    retriever = start_retriever(cfg.retriever, index_dir)          # one RetrieverShard actor per shard
    engines = start_engines(cfg, model_path, retriever)            # rollout.num_engines RolloutEngine actors

The training run, the evaluation command and the benchmarks start them here, so that
kr1/run/ stays the one part of kr1 that reaches into actors/. Close both when done.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from actors.retriever import RetrieverPool
from actors.rollout_engine import RolloutEnginePool
from kr1.config import Config, RetrieverConfig


def start_retriever(cfg: RetrieverConfig, index_dir: str | Path, num_cpus_per_shard: float | None = None,
                    any_shards: bool = False) -> RetrieverPool:
    """The index's shards as actors (`num_cpus_per_shard` overrides the config's share of a core); `any_shards`:
    as many as the index has (a decoy index), not retriever.num_shards."""
    cpus = cfg.num_cpus_per_shard if num_cpus_per_shard is None else num_cpus_per_shard
    return RetrieverPool(index_dir, None if any_shards else cfg.num_shards, cfg.top_k, cfg.backend,
                         cfg.max_query_chars, cpus)


def start_engines(cfg: Config, model_path: str | Path, retriever: RetrieverPool, placement: Any = None
                  ) -> RolloutEnginePool:
    """`rollout.num_engines` engines of `rollout.backend` serving `model_path`, searching `retriever`."""
    return RolloutEnginePool(cfg, str(model_path), retriever, placement)
