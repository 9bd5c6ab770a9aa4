"""Shared fixtures: one local Ray instance per session, and a small synthetic world with indexes.

Everything is built locally; HF_HUB_OFFLINE=1 makes any accidental download fail loudly.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import ray  # noqa: E402


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole test session (logical CPUs above the 2 real ones, for actor pools)."""
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=8, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def world_dir(tmp_path_factory) -> Path:
    from pipelines.synthetic_world import generate

    out = tmp_path_factory.mktemp("world") / "world"
    generate(out, seed=0, people=200)
    return out


@pytest.fixture(scope="session")
def index_factory(ray_session, world_dir, tmp_path_factory):
    """Build (once per shard count) an index of the session world."""
    from pipelines.build_index import build_index

    built: dict[int, Path] = {}

    def make(num_shards: int) -> Path:
        if num_shards not in built:
            out = tmp_path_factory.mktemp(f"index{num_shards}") / "index"
            build_index(world_dir / "corpus.jsonl", out, num_shards, progress=False)
            built[num_shards] = out
        return built[num_shards]

    return make


@pytest.fixture(scope="session")
def tiny_model(world_dir, index_factory, tmp_path_factory) -> Path:
    """A tiny Qwen2 with a locally trained tokenizer, warm-started briefly on the tag format."""
    from pipelines.bootstrap_model import bootstrap

    out = tmp_path_factory.mktemp("model") / "tiny"
    bootstrap(world_dir, out, seed=0, size="tiny", index=index_factory(2), sft_steps=250, progress=False)
    return out


@pytest.fixture(scope="module")
def questions(world_dir):
    """Six multi-hop and six single-hop dev questions."""
    from kr1.data import load_questions

    return load_questions(world_dir / "dev.jsonl")[:6] + load_questions(world_dir / "single_hop.jsonl")[:6]


@pytest.fixture(scope="module")
def generator(tiny_model):
    """The tiny model behind the `hf` generator, in the test process."""
    from kr1.generation import HFGenerator

    return HFGenerator(str(tiny_model), seed=0)


@pytest.fixture(scope="session")
def retriever_pool(ray_session, index_factory):
    from actors.retriever import RetrieverPool

    pool = RetrieverPool(index_factory(2), top_k=3, num_cpus_per_shard=0.5)
    yield pool
    pool.close()
