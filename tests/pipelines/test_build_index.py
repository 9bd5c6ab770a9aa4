"""`python -m pipelines.build_index`: refusals and an atomic replace (sharding correctness: tests/retrieval)."""

from __future__ import annotations

import pytest

from kr1.data import DataError
from kr1.run.index_build import build_index
from pipelines.build_index import main as build_main


def test_build_rejects_empty_corpus_and_too_many_shards(ray_session, tmp_path, world_dir):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="corpus is empty"):
        build_index(empty, tmp_path / "out", 2, progress=False)
    tiny = tmp_path / "tiny.jsonl"
    tiny.write_text('{"id": "a", "text": "one passage"}\n')
    with pytest.raises(ValueError, match="2 shards, but its lines split into only 1 chunks"):
        build_index(tiny, tmp_path / "out", 2, progress=False)
    assert not (tmp_path / "out").exists()


def test_build_cli_replaces_an_index_atomically(ray_session, tmp_path, world_dir, capsys):
    out = tmp_path / "index"
    build_main(["--corpus", str(world_dir / "corpus.jsonl"), "--out", str(out), "--shards", "2"])
    build_main(["--corpus", str(world_dir / "corpus.jsonl"), "--out", str(out), "--shards", "3"])
    assert "into 3 shards" in capsys.readouterr().out
    names = ["build.json", "manifest.json", "shard_000", "shard_001", "shard_002"]
    assert sorted(p.name for p in out.iterdir()) == names
    assert [p.name for p in tmp_path.iterdir()] == ["index"]


def _shard_files(index):
    import numpy as np

    arrays = {name: np.load(index / "shard_000" / f"{name}.csc.index.npy") for name in ("data", "indices", "indptr")}
    return arrays, (index / "shard_000" / "corpus.jsonl").read_bytes()


def test_a_build_in_many_chunks_equals_the_one_built_in_one_piece(ray_session, tmp_path, world_dir, index_factory,
                                                                  retrieval_queries):
    """A memory budget small enough for 4 KB chunks (about 16 per shard): the same matrix and passages as one
    chunk, and on 2 shards the same top-k and scores for every query."""
    import gzip
    import json

    import numpy as np

    from kr1.retrieval.scoring import search_index

    whole = build_index(world_dir / "corpus.jsonl", tmp_path / "whole", 1, progress=False)
    chunked = build_index(world_dir / "corpus.jsonl", tmp_path / "chunked", 1, progress=False,
                          memory_budget=64 << 10)
    assert chunked == whole
    (arrays, corpus), (arrays_chunked, corpus_chunked) = _shard_files(tmp_path / "whole"), _shard_files(
        tmp_path / "chunked")
    assert corpus_chunked == corpus and all(np.array_equal(arrays[k], arrays_chunked[k]) for k in arrays)
    # gzipped, in chunks, two shards: the single index's ranking and scores
    with open(world_dir / "corpus.jsonl", "rb") as source, gzip.open(tmp_path / "corpus.jsonl.gz", "wb") as out:
        out.write(source.read())
    two = build_index(tmp_path / "corpus.jsonl.gz", tmp_path / "two", 2, progress=False, memory_budget=64 << 10)
    assert two.num_docs == whole.num_docs and 0 < two.shard_offsets[1] < two.num_docs
    ranked = [[(h.index, h.id, h.score) for h in hits] for hits in search_index(tmp_path / "two", retrieval_queries, 5)]
    assert ranked == [[(h.index, h.id, h.score) for h in hits]
                      for hits in search_index(index_factory(1), retrieval_queries, 5)]
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["build.json", "manifest.json", "shard_000",
                                                                     "shard_001"]
    record = json.loads((tmp_path / "two" / "build.json").read_text())
    assert record["chunks"] >= 8 and record["passages"] == whole.num_docs
    assert all(record[k] > 0 for k in ("peak_rss_driver", "peak_rss_tokenize", "peak_rss_write"))
    # a bad row in a late chunk is named by its line in the whole file, and nothing is written
    lines = (world_dir / "corpus.jsonl").read_text().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines[:-3] + [json.dumps({"id": "x"})] + lines[-2:]) + "\n")
    with pytest.raises(DataError, match=rf"bad.jsonl: row {len(lines) - 2}: missing field 'text'"):
        build_index(bad, tmp_path / "bad_index", 2, progress=False, memory_budget=64 << 10)
    assert not (tmp_path / "bad_index").exists()
