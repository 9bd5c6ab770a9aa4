"""Write a corpus JSONL atomically, with its row count and sha256 recorded beside it.

    with corpus_writer(Path("data/wiki-18.jsonl"), source="PeterJinGo/wiki-18-corpus") as out:
        out.write_line(raw_line)          # one JSON line, as read (bytes)
        out.write_row({"id": "7", "title": "T", "text": "..."})
    # data/wiki-18.jsonl and data/wiki-18.jsonl.meta.json now exist: {"rows", "sha256", "bytes", ...}

`pipelines.prepare_corpus` and `kr1.coverage --add-train-paragraphs` write corpora this way, streaming:
nothing holds the corpus. The file appears whole or not at all (kr1.atomic_write), and the sidecar is
written after it, so a sidecar's checksum always describes a complete file (`verify_corpus` checks it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from kr1.atomic_write import atomic_file, write_json
from kr1.data import DataError


def meta_path(corpus: Path) -> Path:
    """Where a corpus's row count and checksum are recorded: `<corpus>.meta.json`."""
    return corpus.with_name(corpus.name + ".meta.json")


class CorpusWriter:
    """Counts rows and hashes bytes as they are written."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self._sha = hashlib.sha256()
        self.rows = 0
        self.bytes = 0
        self.meta: dict[str, Any] = {}  # more to record in the sidecar, learnt while writing

    def write_line(self, line: bytes) -> None:
        if not line.endswith(b"\n"):
            line += b"\n"
        self._handle.write(line)
        self._sha.update(line)
        self.rows += 1
        self.bytes += len(line)

    def write_row(self, row: dict[str, Any]) -> None:
        self.write_line(json.dumps(row, ensure_ascii=False).encode("utf-8"))

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()


@contextlib.contextmanager
def corpus_writer(target: Path, **meta: Any) -> Iterator[CorpusWriter]:
    """A CorpusWriter whose file replaces `target` when the block succeeds, then `<target>.meta.json` holding
    rows, sha256, bytes, `meta` and the writer's own `meta`."""
    target = Path(target)
    with atomic_file(target, "wb") as handle:
        writer = CorpusWriter(handle)
        yield writer
    write_json(meta_path(target), {"rows": writer.rows, "sha256": writer.sha256, "bytes": writer.bytes, **meta,
                                   **writer.meta})


def verify_corpus(corpus: Path) -> dict[str, Any]:
    """The sidecar of `corpus`, once its file is known to match it (row count and sha256)."""
    corpus, sidecar = Path(corpus), meta_path(Path(corpus))
    if not sidecar.is_file():
        raise DataError(f"{sidecar}: not found (write the corpus with python -m pipelines.prepare_corpus)")
    meta = json.loads(sidecar.read_text())
    sha, rows = hashlib.sha256(), 0
    with open(corpus, "rb") as handle:
        for line in handle:
            sha.update(line)
            rows += 1
    if (rows, sha.hexdigest()) != (meta["rows"], meta["sha256"]):
        raise DataError(f"{corpus}: {rows} rows, sha256 {sha.hexdigest()[:12]}..., but {sidecar} records "
                        f"{meta['rows']} rows, sha256 {meta['sha256'][:12]}...: the file changed, prepare it again")
    return meta
