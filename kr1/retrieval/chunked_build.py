"""Build a sharded BM25 index from a JSONL corpus in byte-range chunks, with bounded memory.

    chunks = corpus_chunks(corpus, chunk_bytes)                   # byte ranges at line boundaries
    run = tokenize_chunk(corpus, chunk, spec, work_dir)           # pass 1, one task per chunk, in parallel
    vocab = merge_vocabularies(runs, work_dir)                    # the global vocabulary, streamed
    shards = group_chunks([r.num_docs for r in runs], num_shards) # contiguous chunks, near-equal documents
    write_shard(index_dir, shard, runs[a:b], vocab, ...)          # pass 2, one task per shard, in parallel

No process holds the corpus, a shard's passages or a shard's token stream. Pass 1 tokenises
its chunk once and writes its postings run to disk: the chunk's sorted vocabulary, each term's
(document, term frequency) pairs, document lengths and the passages as stored rows. The
vocabulary merge walks the sorted runs like a merge sort, so the driver keeps one term per
chunk. A shard writer scores its chunks' postings with the global idf and average length and
writes the CSC matrix one block of terms at a time. Every shard shares the global vocabulary,
so the union of per-shard top-k lists, merged by score, is the top-k of one index over the
whole corpus; the arrays are those that one in-memory build writes.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import resource
import shutil
from array import array
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from kr1.data import DataError, not_utf8, passage_from_row
from kr1.retrieval.index import TokenizerSpec, shard_dir

# rows tokenised together: large enough for bm25s's batch speed, small enough to keep the token lists small
TOKENIZE_BATCH = 4096
# peak bytes per corpus byte, measured for pass 1 (token ids, the (term, document) sort, the vocabulary)
PASS1_BYTES_PER_CORPUS_BYTE = 16
# peak bytes per posting in a writer's block (score, document, term, sort order and their copies)
WRITER_BYTES_PER_POSTING = 128


def peak_rss() -> int:
    """This process's peak resident memory in bytes: VmHWM, which starts afresh at exec (ru_maxrss keeps the
    forking parent's), else ru_maxrss."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass(frozen=True)
class CorpusChunk:
    """A byte range of the corpus file that starts at a line start and ends after a newline (or at EOF)."""

    index: int  # position of this chunk in the file
    start: int
    end: int


@dataclass
class ChunkRun:
    """Pass 1's output for one chunk: where its postings run lies and what the driver needs to know."""

    chunk: CorpusChunk
    path: str  # directory of the run's files
    num_lines: int  # physical lines in the byte range (row numbers of later chunks start after them)
    num_docs: int
    num_tokens: int
    num_terms: int  # the chunk's distinct terms
    error: str | None = None  # what is wrong with the chunk's first bad row (pass 1 stops there)
    error_row: int = 0  # that row's line number within the chunk


def corpus_chunks(path: str | Path, chunk_bytes: int) -> list[CorpusChunk]:
    """Split a file into ranges of about `chunk_bytes` that start at line starts; empty ranges are dropped."""
    size = Path(path).stat().st_size
    edges = [0]
    with open(path, "rb") as handle:
        while edges[-1] < size:
            handle.seek(min(size, edges[-1] + max(1, chunk_bytes)) - 1)
            handle.readline()  # to the end of the line the range's last byte is on
            edges.append(min(size, handle.tell()))
    return [CorpusChunk(i, a, b) for i, (a, b) in enumerate(zip(edges, edges[1:])) if b > a]


def _rows(path: str | Path, chunk: CorpusChunk) -> Iterator[tuple[int, bytes]]:
    """(line number within the chunk, line as bytes) for each line of the byte range."""
    with open(path, "rb") as handle:
        handle.seek(chunk.start)
        position, number = chunk.start, 0
        while position < chunk.end:
            raw = handle.readline()
            if not raw:
                return
            position += len(raw)
            number += 1
            yield number, raw


def id_hash(passage_id: str) -> int:
    """A stable 63-bit hash of a passage id: repeated ids are found among hashes, then confirmed by text."""
    return int.from_bytes(hashlib.blake2b(passage_id.encode(), digest_size=8).digest(), "little") >> 1


def tokenize_chunk(corpus: str | Path, chunk: CorpusChunk, spec: TokenizerSpec, work_dir: str | Path) -> ChunkRun:
    """Pass 1: parse, store and tokenise one chunk, and write its postings run under `work_dir`.

    Files of the run: `vocab.txt` (sorted terms), `df.npy` (postings per term), `docs.npy` and `tf.npy`
    (the postings, by term then document), `lengths.npy` (tokens per document), `ids.npy` (id hashes),
    `passages.jsonl` and `offsets.npy` (the stored rows and where each starts). A bad row stops the chunk
    and is returned, not raised, so the driver can number it within the whole file."""
    out = Path(work_dir) / f"chunk_{chunk.index:06d}"
    out.mkdir(parents=True, exist_ok=True)
    lookup: dict[str, int] = {}  # the chunk's terms, numbered as first seen
    parts: list[np.ndarray] = []  # each batch's token stream in those numbers
    lengths, hashes, offsets = array("i"), array("q"), array("q")
    lines, written = 0, 0
    batch: list[str] = []

    def flush() -> None:
        if not batch:
            return
        tokenized = spec.tokenize_ids(batch)
        renumber = np.zeros(max(1, len(tokenized.vocab)), np.int32)
        for term, i in tokenized.vocab.items():
            renumber[i] = lookup.setdefault(term, len(lookup))
        counts = [len(doc) for doc in tokenized.ids]
        lengths.extend(counts)
        parts.append(renumber[np.fromiter(chain.from_iterable(tokenized.ids), np.int64, count=sum(counts))])
        batch.clear()

    with open(out / "passages.jsonl", "w", encoding="utf-8") as store:
        for lines, raw in _rows(corpus, chunk):
            try:  # strictly, as kr1.data reads a corpus: a passage is never indexed with replaced characters
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                return ChunkRun(chunk, str(out), lines, 0, 0, 0, not_utf8(e), lines)
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                return ChunkRun(chunk, str(out), lines, 0, 0, 0, f"not valid JSON ({e.msg})", lines)
            try:
                passage = passage_from_row(row, "")
            except DataError as e:  # the message names the row once the driver knows its number in the file
                return ChunkRun(chunk, str(out), lines, 0, 0, 0, str(e).removeprefix(": "), lines)
            stored = json.dumps(passage.to_row(), ensure_ascii=False, separators=(",", ":")) + "\n"
            try:
                encoded = stored.encode("utf-8")
            except UnicodeEncodeError as e:  # an escaped half of a surrogate pair ("\ud83d"): no UTF-8 text holds it
                return ChunkRun(chunk, str(out), lines, 0, 0, 0,
                                f"holds the lone surrogate {stored[e.start:e.end]!r}, which UTF-8 cannot store", lines)
            offsets.append(written)
            written += len(encoded)
            store.write(stored)
            hashes.append(id_hash(passage.id))
            batch.append(passage.contents)
            if len(batch) == TOKENIZE_BATCH:
                flush()
        flush()
    # terms numbered in first-seen order become sorted ones (the merge walks sorted vocabularies)
    vocab = list(lookup)
    order = sorted(range(len(vocab)), key=vocab.__getitem__)
    rank = np.empty(len(vocab), np.int64)
    rank[np.asarray(order, np.int64)] = np.arange(len(vocab))
    lookup.clear()
    ids = rank[np.concatenate(parts)] if parts else np.zeros(0, np.int64)
    parts.clear()
    doc_lengths = np.frombuffer(lengths, np.int32).copy()
    num_docs = len(doc_lengths)
    doc_of_token = np.repeat(np.arange(num_docs, dtype=np.int64), doc_lengths)
    # each (term, document) pair once, by term then document: the CSC order of the shard's matrix
    pairs, tf = np.unique(ids * max(1, num_docs) + doc_of_token, return_counts=True)
    del ids, doc_of_token
    terms = pairs // max(1, num_docs)
    np.save(out / "docs.npy", (pairs % max(1, num_docs)).astype(np.int32))
    del pairs
    np.save(out / "tf.npy", tf.astype(np.int32))
    np.save(out / "df.npy", np.bincount(terms, minlength=len(vocab)).astype(np.int64))
    np.save(out / "lengths.npy", doc_lengths)
    np.save(out / "ids.npy", np.frombuffer(hashes, np.int64))
    np.save(out / "offsets.npy", np.frombuffer(offsets, np.int64) if offsets else np.zeros(0, np.int64))
    with open(out / "vocab.txt", "w", encoding="utf-8", newline="\n") as handle:
        handle.writelines(vocab[i] + "\n" for i in order)
    return ChunkRun(chunk, str(out), lines, num_docs, int(doc_lengths.sum()), len(vocab))


@dataclass
class GlobalVocabulary:
    """The merged vocabulary: its file, document frequencies and corpus-wide counts."""

    path: str  # one term per line, sorted: term id = line number
    size: int
    idf: np.ndarray  # (size,) float32 Lucene idf
    num_docs: int
    avg_doc_len: float


def _terms(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8", newline="\n") as handle:  # a term never holds "\n"; "\r" is left alone
        for line in handle:
            yield line[:-1]


def _numbered_terms(path: Path, number: int) -> Iterator[tuple[str, int]]:
    for term in _terms(path):
        yield term, number


def merge_vocabularies(runs: Sequence[ChunkRun], work_dir: str | Path) -> GlobalVocabulary:
    """Merge the runs' sorted vocabularies into the global one and write each run's `map.npy` (its terms'
    global ids), holding one term per run at a time."""
    work_dir = Path(work_dir)
    doc_freqs = array("q")
    maps = [array("q") for _ in runs]
    vocab_path = work_dir / "vocab.txt"
    streams = [_numbered_terms(Path(r.path) / "vocab.txt", i) for i, r in enumerate(runs)]
    dfs = [np.load(Path(r.path) / "df.npy") for r in runs]
    positions = [0] * len(runs)
    previous, size = None, -1
    with open(vocab_path, "w", encoding="utf-8", newline="\n") as out:
        for term, i in heapq.merge(*streams):
            if term != previous:
                out.write(term + "\n")
                doc_freqs.append(0)
                previous, size = term, size + 1
            maps[i].append(size)
            doc_freqs[size] += int(dfs[i][positions[i]])
            positions[i] += 1
    for run, mapping in zip(runs, maps):
        np.save(Path(run.path) / "map.npy", np.frombuffer(mapping, np.int64) if mapping else np.zeros(0, np.int64))
    num_docs = sum(r.num_docs for r in runs)
    df = np.frombuffer(doc_freqs, np.int64) if doc_freqs else np.zeros(0, np.int64)
    # bm25s computes the Lucene idf in float64 and stores it as float32
    idf = np.log(1.0 + (num_docs - df + 0.5) / (df + 0.5)).astype(np.float32)
    avg = sum(r.num_tokens for r in runs) / num_docs if num_docs else 0.0
    return GlobalVocabulary(str(vocab_path), size + 1, idf, num_docs, avg)


def group_chunks(doc_counts: Sequence[int], num_shards: int) -> list[tuple[int, int]]:
    """Contiguous [first, last) chunk ranges, one per shard, with near-equal documents (never none)."""
    total = int(sum(doc_counts))
    if num_shards < 1:
        raise ValueError(f"number of shards must be at least 1, got {num_shards}")
    if num_shards > total:
        raise ValueError(f"{num_shards} shards for {total} documents: use at most one shard per document")
    # nonempty chunks from chunk i to the end, for i = 0 .. len(doc_counts)
    nonempty_from = np.append(np.cumsum(np.asarray(doc_counts)[::-1] > 0)[::-1], 0)
    nonempty = int(nonempty_from[0])
    if num_shards > nonempty:
        raise ValueError(f"{num_shards} shards for {nonempty} chunks of the corpus: use fewer shards or a smaller "
                         f"memory budget")
    cumulative = np.cumsum([0, *doc_counts])
    edges = [0]
    for s in range(1, num_shards):
        # the chunk edge nearest the ideal split, leaving at least one nonempty chunk for each shard after it
        target = int(np.argmin(np.abs(cumulative - total * s / num_shards)))
        later = [i for i in range(len(doc_counts) + 1)
                 if nonempty_from[i] >= num_shards - s and cumulative[i] > cumulative[edges[-1]]]
        edges.append(min(later, key=lambda i: (abs(i - target), i)))
    edges.append(len(doc_counts))
    return list(zip(edges, edges[1:]))


def _stream_vocab_json(vocab: GlobalVocabulary, path: Path) -> None:
    """bm25s's `vocab.index.json` ({term: id}) written term by term from the vocabulary file."""
    with open(path, "w", encoding="utf-8") as out:
        out.write("{")
        for i, term in enumerate(_terms(Path(vocab.path))):
            out.write(("," if i else "") + json.dumps(term, ensure_ascii=False) + ":" + str(i))
        out.write("}")


def _npy_writer(path: Path, dtype: np.dtype, length: int):  # noqa: ANN202
    """An open file positioned after a .npy header for `length` items of `dtype`; append raw items."""
    handle = open(path, "wb")
    np.lib.format.write_array_header_1_0(handle, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                  "fortran_order": False, "shape": (length,)})
    return handle


def write_shard(index_dir: str | Path, shard: int, runs: Sequence[ChunkRun], vocab: GlobalVocabulary,
                k1: float, b: float, block_postings: int, version: str) -> Path:
    """Pass 2: score the runs' postings with the global statistics and save them as one bm25s shard, one block
    of terms (about `block_postings` postings) at a time; the stored rows are copied, not parsed."""
    target = shard_dir(index_dir, shard)
    target.mkdir(parents=True)
    maps = [np.load(Path(r.path) / "map.npy") for r in runs]
    dfs = [np.load(Path(r.path) / "df.npy") for r in runs]
    counts = np.zeros(vocab.size, np.int64)
    for mapping, df in zip(maps, dfs):
        counts[mapping] += df
    indptr = np.zeros(vocab.size + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    del counts
    np.save(target / "indptr.csc.index.npy", indptr)
    starts = [np.concatenate([[0], np.cumsum(df)]) for df in dfs]  # each run's first posting of each local term
    bases = np.cumsum([0] + [r.num_docs for r in runs])
    lengths = [np.load(Path(r.path) / "lengths.npy") for r in runs]
    nnz = int(indptr[-1])
    with _npy_writer(target / "data.csc.index.npy", np.float32, nnz) as data_out, \
            _npy_writer(target / "indices.csc.index.npy", np.int32, nnz) as indices_out:
        first = 0
        while first < vocab.size:
            # the block: terms from `first` while their postings fit (at least one term)
            last = int(np.searchsorted(indptr, indptr[first] + block_postings, side="right")) - 1
            last = min(vocab.size, max(first + 1, last))
            parts = []
            for run, mapping, df, start, base, doc_len in zip(runs, maps, dfs, starts, bases, lengths):
                lo, hi = np.searchsorted(mapping, [first, last])
                p0, p1 = int(start[lo]), int(start[hi])
                if p1 == p0:
                    continue
                docs = np.load(Path(run.path) / "docs.npy", mmap_mode="r")[p0:p1].astype(np.int64)
                tf = np.load(Path(run.path) / "tf.npy", mmap_mode="r")[p0:p1].astype(np.float32)
                terms = np.repeat(mapping[lo:hi], df[lo:hi])
                # Lucene term-frequency component, as bm25s `_score_tfc_lucene`
                tfc = tf / (k1 * ((1 - b) + b * doc_len[docs].astype(np.float64) / vocab.avg_doc_len) + tf)
                parts.append((terms, docs + base, (vocab.idf[terms] * tfc).astype(np.float32)))
            if parts:
                terms = np.concatenate([p[0] for p in parts])
                order = np.argsort(terms, kind="stable")  # by term; within a term, runs (documents) stay in order
                data_out.write(np.concatenate([p[2] for p in parts])[order].tobytes())
                indices_out.write(np.concatenate([p[1] for p in parts])[order].astype(np.int32).tobytes())
            first = last
    num_docs = int(bases[-1])
    _stream_vocab_json(vocab, target / "vocab.index.json")
    params = {"k1": k1, "b": b, "delta": 0.5, "method": "lucene", "idf_method": "lucene", "dtype": "float32",
              "int_dtype": "int32", "num_docs": num_docs, "version": version, "backend": "numpy"}
    (target / "params.index.json").write_text(json.dumps(params, indent=4))
    offsets, written = [], 0
    with open(target / "corpus.jsonl", "wb") as store:
        for run in runs:
            offsets.append(np.load(Path(run.path) / "offsets.npy") + written)
            with open(Path(run.path) / "passages.jsonl", "rb") as piece:
                shutil.copyfileobj(piece, store, 1 << 20)
            written = store.tell()
    all_offsets = np.concatenate(offsets) if offsets else np.zeros(0, np.int64)
    with open(target / "corpus.mmindex.json", "w") as handle:  # bm25s's line index of corpus.jsonl
        handle.write("[" + ",".join(map(str, all_offsets.tolist())) + "]")
    return target
