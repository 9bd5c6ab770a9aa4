"""`python -m pipelines.prepare_corpus`: both published layouts read offline from a hub cache or a local copy,
copied row for row with count and sha256 beside them; a bad row names file and row and writes nothing."""

from __future__ import annotations

import gzip
import hashlib
import json
import zipfile

import pytest

from kr1.data import DataError, load_corpus
from kr1.retrieval.corpus_file import meta_path, verify_corpus
from kr1.retrieval.wiki18 import LAYOUTS, prepare_corpus
from pipelines.prepare_corpus import main

ROWS = [{"id": "0", "contents": '"Aaron"\nAaron is a prophet, high priest, and the brother of Moses.'},
        {"id": "1", "contents": '"Amber Lantern"\nThe Amber Lantern is a film directed by Arlen Voss.'},
        {"id": "2", "contents": "Untitled\nA passage whose title is not quoted."}]


def _jsonl(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _write_layout(folder, layout: str, payload: bytes):
    """The layout's file at its repo path under `folder`: Search-R1's gzip, FlashRAG's zip of one JSONL."""
    path = folder / LAYOUTS[layout].filename
    path.parent.mkdir(parents=True, exist_ok=True)
    if layout == "search-r1":
        path.write_bytes(gzip.compress(payload))
    else:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("wiki18_100w.jsonl", payload)
    return path


def _hub_cache(root, layout: str, payload: bytes):
    """A hub cache holding the layout's file, as hf_hub_download leaves it (refs/main -> snapshot)."""
    repo = root / f"datasets--{LAYOUTS[layout].repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    _write_layout(repo / "snapshots" / ("0" * 40), layout, payload)
    return root


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_hub_cache_copied_row_for_row_with_count_and_checksum(tmp_path, layout):
    cache = _hub_cache(tmp_path / "hub", layout, _jsonl(ROWS))
    out = tmp_path / "data" / "wiki-18.jsonl"
    assert prepare_corpus(out, layout, cache_dir=cache, progress=False) == 3
    assert out.read_bytes() == _jsonl(ROWS)
    meta = json.loads(meta_path(out).read_text())
    assert meta["rows"] == 3 and meta["sha256"] == hashlib.sha256(_jsonl(ROWS)).hexdigest()
    assert meta["repo_id"] == LAYOUTS[layout].repo_id and meta["layout"] == layout
    assert verify_corpus(out)["rows"] == 3
    assert [p.title for p in load_corpus(out)] == ["Aaron", "Amber Lantern", "Untitled"]


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_local_source_file_or_snapshot_folder(tmp_path, layout, capsys):
    path = _write_layout(tmp_path / "snapshot", layout, _jsonl(ROWS) + b"\n")  # a trailing blank line is dropped
    for source in (path, tmp_path / "snapshot"):
        out = tmp_path / f"out_{source.name}.jsonl"
        main(["--out", str(out), "--layout", layout, "--source", str(source)])
        assert out.read_bytes() == _jsonl(ROWS)
        assert "wrote 3 passages" in capsys.readouterr().out


def test_missing_from_an_offline_cache_is_one_line(tmp_path):
    with pytest.raises(DataError, match=r"PeterJinGo/wiki-18-corpus:wiki-18\.jsonl\.gz: cannot download .*--source"):
        prepare_corpus(tmp_path / "out.jsonl", cache_dir=tmp_path / "empty", progress=False)


@pytest.mark.parametrize("layout, bad, message", [
    ("search-r1", {"id": "3"}, r"wiki-18\.jsonl\.gz: row 3: missing field 'text' \(or 'contents'\)"),
    ("flashrag", {"contents": "x"}, r"wiki18_100w\.zip:wiki18_100w\.jsonl: row 3: missing field 'id'"),
])
def test_bad_row_names_file_and_row_and_writes_nothing(tmp_path, layout, bad, message):
    path = _write_layout(tmp_path / "src", layout, _jsonl(ROWS[:2] + [bad]))
    out = tmp_path / "out.jsonl"
    with pytest.raises(DataError, match=message):
        prepare_corpus(out, layout, source=path, progress=False)
    assert not out.exists() and not meta_path(out).exists()
    assert [p.name for p in tmp_path.iterdir()] == ["src"], "a partial output was left behind"


def test_unreadable_archives_and_changed_files(tmp_path):
    fake = tmp_path / "wiki-18.jsonl.gz"
    fake.write_bytes(b"not gzip at all\n")
    with pytest.raises(DataError, match=r"wiki-18\.jsonl\.gz: not readable \(Not a gzipped file"):
        prepare_corpus(tmp_path / "a.jsonl", source=fake, progress=False)
    zipped = tmp_path / "corpus.zip"
    zipped.write_bytes(b"PK not a zip")
    with pytest.raises(DataError, match=r"corpus\.zip: not a readable zip file"):
        prepare_corpus(tmp_path / "b.jsonl", "flashrag", source=zipped, progress=False)
    plain = tmp_path / "plain.jsonl"
    plain.write_bytes(b'{"id": "1", "text": "\xff"}\n')
    with pytest.raises(DataError, match=r"plain\.jsonl: row 1: not valid UTF-8"):
        prepare_corpus(tmp_path / "c.jsonl", source=plain, progress=False)
    plain.write_bytes(_jsonl(ROWS))
    out = tmp_path / "d.jsonl"
    prepare_corpus(out, source=plain, progress=False)
    out.write_bytes(_jsonl(ROWS[:2]))
    with pytest.raises(DataError, match=r"d\.jsonl: 2 rows, .* records 3 rows"):
        verify_corpus(out)
