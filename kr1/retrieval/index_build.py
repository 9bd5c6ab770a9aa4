"""The pure steps around a chunked index build: checks before it starts, the chunk size, the rows' checks.

    check_gzip_header(corpus)                                      # a .gz that is not gzip: refused up front
    source = plain_corpus(corpus, work)                            # byte ranges need a plain file
    size = chunk_bytes(source.stat().st_size, num_shards, budget)  # within the budget, several per shard
    check_rows(runs, corpus, source)                               # after pass 1: the first bad row, in file order

`kr1.run.index_build.build_index` runs `kr1.retrieval.chunked_build`'s passes as Ray tasks between these;
nothing here imports Ray.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from kr1.data import GZIP_ERRORS, DataError, iter_corpus
from kr1.errors import UserError
from kr1.retrieval.chunked_build import PASS1_BYTES_PER_CORPUS_BYTE, ChunkRun, id_hash

# what one build task may hold: fits an 8 GiB worker running two of them beside the Ray daemons
DEFAULT_MEMORY_BUDGET = 2 << 30
# what the build used, beside the manifest: wall time, chunks, each kind of process's peak memory
BUILD_RECORD = "build.json"
# chunks per shard at least, so that shards of whole chunks hold near-equal numbers of passages
CHUNKS_PER_SHARD = 4
MIN_CHUNK_BYTES = 16 << 20


class BuildError(UserError, ValueError):
    """A build that cannot run as asked: a shard count or memory budget the corpus or the cluster cannot meet."""


def chunk_bytes(corpus_bytes: int, num_shards: int, memory_budget: int) -> int:
    """Bytes of corpus per pass-1 chunk: within the memory budget; several per shard for balance, but not so
    small that starting tasks dominates."""
    balanced = max(MIN_CHUNK_BYTES, -(-corpus_bytes // (CHUNKS_PER_SHARD * num_shards)))
    return max(1, min(memory_budget // PASS1_BYTES_PER_CORPUS_BYTE, balanced, -(-corpus_bytes // num_shards)))


def plain_corpus(corpus: Path, work: Path) -> Path:
    """The corpus as a plain file that byte ranges can split: a gzipped one is decompressed into `work`."""
    if corpus.suffix != ".gz":
        return corpus
    plain = work / corpus.name.removesuffix(".gz")
    with gzip.open(corpus, "rb") as source, open(plain, "wb") as out:
        try:
            shutil.copyfileobj(source, out, 1 << 20)
        except GZIP_ERRORS as e:  # cut short or corrupt past its header
            raise DataError(f"{corpus}: not a readable gzip file ({e})") from None
    return plain


def check_gzip_header(corpus: Path) -> None:
    """A `.gz` corpus that is not gzip at all fails here, before Ray starts and anything is written."""
    with open(corpus, "rb") as handle:
        if corpus.suffix == ".gz" and handle.read(2) != b"\x1f\x8b":
            raise DataError(f"{corpus}: not a gzip file, though its name ends in .gz")


def check_rows(runs: Sequence[ChunkRun], corpus: Path, source: Path) -> None:
    """The first bad row in file order, numbered within the file; then an empty corpus; then a repeated id."""
    line = 0
    for run in runs:
        if run.error is not None:
            raise DataError(f"{corpus}: row {line + run.error_row}: {run.error}")
        line += run.num_lines
    if not sum(r.num_docs for r in runs):
        raise DataError(f"{corpus}: corpus is empty")
    hashes = np.concatenate([np.load(Path(r.path) / "ids.npy") for r in runs])
    ordered = np.sort(hashes)
    if len(ordered) and np.any(ordered[1:] == ordered[:-1]):  # rare: confirm by the ids themselves, and name the row
        seen: set[str] = set()
        suspects = set(ordered[1:][ordered[1:] == ordered[:-1]].tolist())
        for number, passage in iter_corpus(source):
            if id_hash(passage.id) in suspects:
                if passage.id in seen:
                    raise DataError(f"{corpus}: row {number}: field 'id' {passage.id!r} is repeated")
                seen.add(passage.id)
