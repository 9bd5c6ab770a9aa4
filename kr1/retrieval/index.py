"""A sharded BM25 index whose shards score with global corpus statistics.

An index directory holds `manifest.json` and one bm25s index per shard
(`shard_000/`, ...), each loadable with `bm25s.BM25.load(dir, mmap=True)`.
Building has three pure steps that `pipelines.build_index` runs as Ray tasks:

    tokens = tokenize_shard(texts, spec)           # one task per shard, in parallel
    stats = merge_statistics([t.summary() ...])    # global vocabulary, df, N, avgdl
    write_shard(dir, tokens, stats, i, passages)   # one task per shard, in parallel

Every shard shares the global vocabulary and bakes the *global* idf and average
document length into its score matrix, so the union of per-shard top-k lists,
merged by score, equals the top-k of one index over the whole corpus.
Scores are BM25 with the Lucene idf, as bm25s computes them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import bm25s
import numpy as np

from kr1.atomic_write import write_json
from kr1.data import Passage
from kr1.errors import UserError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class BM25IndexError(UserError, ValueError):
    """An index directory that is missing, incomplete or does not match what is asked of it."""


@dataclass(frozen=True)
class TokenizerSpec:
    """How text becomes BM25 terms; stored in the manifest so queries match the corpus."""

    lower: bool = True
    stopwords: str = "en"
    stemmer: str | None = "english"
    token_pattern: str = r"(?u)\b\w\w+\b"

    def tokenize(self, texts: Sequence[str]) -> list[list[str]]:
        stemmer = None
        if self.stemmer:
            import Stemmer

            stemmer = Stemmer.Stemmer(self.stemmer)
        return bm25s.tokenize(list(texts), lower=self.lower, token_pattern=self.token_pattern,
                              stopwords=self.stopwords, stemmer=stemmer, return_ids=False,
                              show_progress=False)


@dataclass
class IndexManifest:
    """What an index is: written last, so a directory without it is incomplete."""

    num_shards: int
    num_docs: int
    vocab_size: int
    avg_doc_len: float
    shard_offsets: list[int]  # global index of each shard's first document; one more entry = num_docs
    k1: float
    b: float
    tokenizer: dict[str, Any]
    corpus: str = ""
    format_version: int = FORMAT_VERSION

    def save(self, index_dir: Path) -> None:
        write_json(Path(index_dir) / MANIFEST, asdict(self))

    @classmethod
    def load(cls, index_dir: str | Path) -> "IndexManifest":
        path = Path(index_dir) / MANIFEST
        if not Path(index_dir).is_dir():
            raise BM25IndexError(f"{index_dir}: index directory not found "
                                 "(build it with python -m pipelines.build_index)")
        if not path.is_file():
            raise BM25IndexError(f"{index_dir}: no {MANIFEST}; the index is incomplete, rebuild it")
        try:
            raw = json.loads(path.read_text())
            manifest = cls(**raw)
        except (json.JSONDecodeError, TypeError) as e:
            raise BM25IndexError(f"{path}: unreadable manifest ({e})") from None
        if manifest.format_version != FORMAT_VERSION:
            raise BM25IndexError(f"{path}: format_version {manifest.format_version}, this kr1 reads {FORMAT_VERSION}")
        if len(manifest.shard_offsets) != manifest.num_shards + 1 or manifest.shard_offsets[-1] != manifest.num_docs:
            raise BM25IndexError(f"{path}: shard_offsets {manifest.shard_offsets} do not fit {manifest.num_shards} "
                                 f"shards of {manifest.num_docs} documents; rebuild the index")
        try:  # queries are tokenised with these settings: fail here, not inside every shard actor
            manifest.tokenizer_spec.tokenize(["probe"])
        except Exception as e:
            reason = str(e.args[0]).splitlines()[0] if e.args else type(e).__name__
            raise BM25IndexError(f"{path}: tokenizer settings {manifest.tokenizer} are unusable ({reason})") from None
        return manifest

    @property
    def tokenizer_spec(self) -> TokenizerSpec:
        return TokenizerSpec(**self.tokenizer)


def shard_dir(index_dir: str | Path, shard: int) -> Path:
    return Path(index_dir) / f"shard_{shard:03d}"


def check_index(index_dir: str | Path, num_shards: int | None = None) -> IndexManifest:
    """The manifest, once the index is known to be usable: the shard count asked for, every shard
    present, and each shard's vocabulary the manifest's (a shard from another build, with other
    tokenizer settings or another corpus, has another one). Reads no more than file headers."""
    manifest = IndexManifest.load(index_dir)
    if num_shards is not None and num_shards != manifest.num_shards:
        raise BM25IndexError(f"{index_dir}: index has {manifest.num_shards} shards but retriever.num_shards="
                             f"{num_shards}; rebuild the index or set retriever.num_shards={manifest.num_shards}")
    for shard in range(manifest.num_shards):
        path = shard_dir(index_dir, shard)
        indptr = path / "indptr.csc.index.npy"
        if not (path / "params.index.json").is_file() or not indptr.is_file():
            raise BM25IndexError(f"{path}: shard files missing; the index is incomplete, rebuild it")
        terms = np.load(indptr, mmap_mode="r").shape[0] - 1  # the score matrix has one column per term
        if terms != manifest.vocab_size:
            raise BM25IndexError(f"{path}: {terms} terms, manifest says {manifest.vocab_size}; the shard comes "
                                 f"from another build (corpus or tokenizer settings), rebuild the index")
    return manifest


@dataclass
class ShardTokens:
    """One shard's tokenised documents in a shard-local vocabulary."""

    vocab: list[str]  # local term strings, sorted
    token_ids: np.ndarray  # (total_tokens,) int32 local term id of every token, documents back to back
    doc_lengths: np.ndarray  # (num_docs,) int32 tokens per document
    doc_freqs: np.ndarray  # (len(vocab),) int64 documents containing each local term

    def summary(self) -> "ShardTokens":
        """The statistics alone (no token stream), for merging on the driver."""
        return ShardTokens(self.vocab, np.zeros(0, np.int32), self.doc_lengths, self.doc_freqs)


def tokenize_shard(texts: Sequence[str], spec: TokenizerSpec) -> ShardTokens:
    """Tokenise a shard's documents into a local vocabulary with document frequencies."""
    docs = spec.tokenize(texts)
    vocab = sorted({term for doc in docs for term in doc})
    lookup = {term: i for i, term in enumerate(vocab)}
    lengths = np.fromiter((len(doc) for doc in docs), dtype=np.int32, count=len(docs))
    ids = np.fromiter((lookup[t] for doc in docs for t in doc), dtype=np.int32, count=int(lengths.sum()))
    doc_of_token = np.repeat(np.arange(len(docs), dtype=np.int64), lengths)
    # each (document, term) pair counts once towards the term's document frequency
    pairs = np.unique(doc_of_token * max(1, len(vocab)) + ids)
    doc_freqs = np.bincount(pairs % max(1, len(vocab)), minlength=len(vocab)).astype(np.int64)
    return ShardTokens(vocab, ids, lengths, doc_freqs)


@dataclass
class GlobalStatistics:
    """Corpus-wide statistics that every shard scores with."""

    vocab: list[str]
    idf: np.ndarray  # (len(vocab),) float32 Lucene idf
    num_docs: int
    avg_doc_len: float
    local_to_global: list[np.ndarray] = field(default_factory=list)  # per shard: (local vocab,) int64
    shard_offsets: list[int] = field(default_factory=list)


def merge_statistics(summaries: Sequence[ShardTokens]) -> GlobalStatistics:
    """Union the shard vocabularies and sum their document frequencies."""
    vocab = sorted(set().union(*(s.vocab for s in summaries)))
    lookup = {term: i for i, term in enumerate(vocab)}
    doc_freqs = np.zeros(len(vocab), dtype=np.int64)
    mappings = []
    for s in summaries:
        mapping = np.fromiter((lookup[t] for t in s.vocab), dtype=np.int64, count=len(s.vocab))
        np.add.at(doc_freqs, mapping, s.doc_freqs)
        mappings.append(mapping)
    num_docs = int(sum(len(s.doc_lengths) for s in summaries))
    total_tokens = float(sum(int(s.doc_lengths.sum()) for s in summaries))
    # bm25s computes the Lucene idf in float64 and stores it as float32
    idf = np.log(1.0 + (num_docs - doc_freqs + 0.5) / (doc_freqs + 0.5)).astype(np.float32)
    offsets = np.cumsum([0] + [len(s.doc_lengths) for s in summaries]).tolist()
    avg = total_tokens / num_docs if num_docs else 0.0
    return GlobalStatistics(vocab, idf, num_docs, avg, mappings, offsets)


def shard_score_matrix(tokens: ShardTokens, mapping: np.ndarray, stats: GlobalStatistics,
                       k1: float, b: float) -> dict[str, Any]:
    """The shard's (documents x global vocabulary) BM25 scores as CSC arrays, bm25s layout."""
    n_docs, n_vocab = len(tokens.doc_lengths), len(stats.vocab)
    global_ids = mapping[tokens.token_ids] if len(tokens.token_ids) else np.zeros(0, np.int64)
    doc_of_token = np.repeat(np.arange(n_docs, dtype=np.int64), tokens.doc_lengths)
    pairs, tf = np.unique(doc_of_token * n_vocab + global_ids, return_counts=True)
    docs, terms = pairs // n_vocab, pairs % n_vocab
    doc_len = tokens.doc_lengths[docs].astype(np.float64)
    tf = tf.astype(np.float32)
    # Lucene term-frequency component, as bm25s `_score_tfc_lucene`
    tfc = tf / (k1 * ((1 - b) + b * doc_len / stats.avg_doc_len) + tf)
    scores = (stats.idf[terms] * tfc).astype(np.float32)
    order = np.lexsort((docs, terms))  # CSC: by term, then document
    indptr = np.zeros(n_vocab + 1, dtype=np.int64)
    np.cumsum(np.bincount(terms, minlength=n_vocab), out=indptr[1:])
    return {"data": scores[order], "indices": docs[order].astype(np.int32), "indptr": indptr, "num_docs": n_docs}


def write_shard(index_dir: str | Path, shard: int, tokens: ShardTokens, stats: GlobalStatistics,
                passages: Sequence[Passage], k1: float, b: float) -> Path:
    """Score one shard with the global statistics and save it as a bm25s index."""
    scores = shard_score_matrix(tokens, stats.local_to_global[shard], stats, k1, b)
    model = bm25s.BM25(k1=k1, b=b, method="lucene")
    model.scores = scores
    model.vocab_dict = {term: i for i, term in enumerate(stats.vocab)}
    model.nonoccurrence_array = None
    target = shard_dir(index_dir, shard)
    model.save(target, corpus=[p.to_row() for p in passages], show_progress=False,
               raise_on_serialization_error=True)
    return target


def shard_bounds(num_docs: int, num_shards: int) -> list[tuple[int, int]]:
    """Contiguous, near-equal [start, end) ranges; shard order is global document order."""
    if num_shards < 1:
        raise ValueError(f"number of shards must be at least 1, got {num_shards}")
    if num_shards > num_docs:
        raise ValueError(f"{num_shards} shards for {num_docs} documents: use at most one shard per document")
    edges = np.linspace(0, num_docs, num_shards + 1).round().astype(int)
    return [(int(edges[i]), int(edges[i + 1])) for i in range(num_shards)]
