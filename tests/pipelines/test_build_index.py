"""`python -m pipelines.build_index`: refusals and an atomic replace (sharding correctness: tests/retrieval)."""

from __future__ import annotations

import pytest

from kr1.data import DataError
from pipelines.build_index import build_index
from pipelines.build_index import main as build_main


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
