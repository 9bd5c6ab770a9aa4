"""Query the shards of a kr1 BM25 index: the scoring kernel, one shard, and a whole index in-process.

    searcher = ShardSearcher("index_dir", shard=0)          # memory-mapped
    hits = searcher.search(["who directed the amber lantern"], k=3)
    merged = kr1.retrieval.hits.merge_hits([hits_shard0, hits_shard1], k=3)
    hits = search_index("index_dir", ["where was arlen voss born"], top_k=3)   # every shard, merged

Ranking is by score, then by global document index, so ties break the same way
however the corpus is sharded. Two scoring backends give identical results: `numba`
(compiled, queries in parallel; the default) and `numpy` (no compilation).
A query with no indexed term gets no hits; a very long one is cut to
`max_query_chars` characters before it is tokenised.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import bm25s
import numba
import numpy as np

from kr1.retrieval.hits import Hit, merge_hits
from kr1.retrieval.index import BM25IndexError, IndexManifest, check_score_arrays, shard_dir, unreadable_shard

# a dense scan wins only while the score buffer stays in a core's L2 cache (1 MiB of float32): at 115k
# documents it is 1.4x faster than tracking touched documents, at 500k 3.3x slower, at 4M 2.9x slower
DENSE_MAX_DOCS = 1 << 18


@numba.njit(cache=True, nogil=True)
def _top_k_dense(query: np.ndarray, data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, k: int,
                 scores: np.ndarray, out_docs: np.ndarray, out_scores: np.ndarray) -> None:
    """`_top_k_one` for queries that touch much of the shard: a sequential scan beats tracking documents."""
    for t in query:
        for j in range(indptr[t], indptr[t + 1]):
            scores[indices[j]] += data[j]
    count = 0
    for d in range(len(scores)):  # ascending documents: an equal score never displaces an earlier one
        v = scores[d]
        if v == 0 or (count == k and v <= out_scores[k - 1]):
            continue
        pos = count if count < k else k - 1
        if count < k:
            count += 1
        while pos > 0 and out_scores[pos - 1] < v:
            out_scores[pos] = out_scores[pos - 1]
            out_docs[pos] = out_docs[pos - 1]
            pos -= 1
        out_scores[pos] = v
        out_docs[pos] = d
    scores[:] = 0


@numba.njit(cache=True, nogil=True)
def _top_k_one(query: np.ndarray, data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, k: int,
               scores: np.ndarray, touched: np.ndarray, out_docs: np.ndarray, out_scores: np.ndarray) -> None:
    """Score one query into the zeroed `scores` buffer, keep its top-k, then re-zero the buffer."""
    postings = 0
    for t in query:
        postings += indptr[t + 1] - indptr[t]
    if len(scores) <= DENSE_MAX_DOCS and postings * 8 > len(scores):
        _top_k_dense(query, data, indices, indptr, k, scores, out_docs, out_scores)
        return
    n = 0
    for t in query:
        for j in range(indptr[t], indptr[t + 1]):
            d = indices[j]
            if scores[d] == 0:  # Lucene BM25 term scores are positive, so 0 means untouched
                touched[n] = d
                n += 1
            scores[d] += data[j]
    count = 0
    for i in range(n):
        d = touched[i]
        v = scores[d]
        scores[d] = 0
        # rank by score, then by lower document index, whatever order documents arrive in
        if count == k and (v < out_scores[k - 1] or (v == out_scores[k - 1] and d > out_docs[k - 1])):
            continue
        pos = count if count < k else k - 1
        if count < k:
            count += 1
        while pos > 0 and (out_scores[pos - 1] < v or (out_scores[pos - 1] == v and out_docs[pos - 1] > d)):
            out_scores[pos] = out_scores[pos - 1]
            out_docs[pos] = out_docs[pos - 1]
            pos -= 1
        out_scores[pos] = v
        out_docs[pos] = d


@numba.njit(cache=True, parallel=True)
def _top_k_batch(flat: np.ndarray, pointers: np.ndarray, data: np.ndarray, indices: np.ndarray,
                 indptr: np.ndarray, num_docs: int, k: int, chunks: int) -> tuple[np.ndarray, np.ndarray]:
    n_queries = len(pointers) - 1
    out_docs = np.full((n_queries, k), -1, np.int64)
    out_scores = np.zeros((n_queries, k), np.float32)
    # one score buffer per chunk of queries, reset after each query instead of reallocated
    for c in numba.prange(chunks):
        scores = np.zeros(num_docs, np.float32)
        touched = np.empty(num_docs, np.int64)
        for i in range(c, n_queries, chunks):
            _top_k_one(flat[pointers[i]:pointers[i + 1]], data, indices, indptr, k, scores, touched,
                       out_docs[i], out_scores[i])
    return out_docs, out_scores


def _top_k_numpy(query: np.ndarray, data: np.ndarray, indices: np.ndarray, indptr: np.ndarray,
                 num_docs: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The same ranking as `_top_k_one`, vectorised; np.add.at sums in the same order."""
    scores = np.zeros(num_docs, np.float32)
    if len(query):
        spans = [np.arange(indptr[t], indptr[t + 1]) for t in query]
        postings = np.concatenate(spans)
        np.add.at(scores, indices[postings], data[postings])
    candidates = np.flatnonzero(scores)
    values = scores[candidates]
    if len(candidates) > k:
        kth = -np.partition(-values, k - 1)[k - 1]
        keep = values >= kth
        candidates, values = candidates[keep], values[keep]
    order = np.argsort(-values, kind="stable")[:k]
    return candidates[order], values[order]


class ShardSearcher:
    """One memory-mapped shard of an index: tokenises queries and returns its top-k."""

    def __init__(self, index_dir: str | Path, shard: int, backend: str = "numba", mmap: bool = True,
                 threads: int = 1) -> None:
        manifest = IndexManifest.load(index_dir)
        if not 0 <= shard < manifest.num_shards:
            raise BM25IndexError(f"{index_dir}: shard {shard} asked of an index with {manifest.num_shards} shards")
        path = shard_dir(index_dir, shard)
        if not (path / "params.index.json").is_file():
            raise BM25IndexError(f"{path}: shard files missing; the index is incomplete, rebuild it")
        if backend not in ("numba", "numpy"):
            raise ValueError(f"unknown retriever backend {backend!r} (numba or numpy)")
        check_score_arrays(path)  # a truncated array is named here, not by a numpy error inside bm25s
        try:
            self.model = bm25s.BM25.load(path, mmap=mmap, load_corpus=True, show_progress=False)
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise unreadable_shard(path, e) from None
        if isinstance(getattr(self.model.corpus, "mmindex", None), list):  # line offsets: 8 bytes each, not 36
            self.model.corpus.mmindex = np.asarray(self.model.corpus.mmindex, dtype=np.int64)
        self.offset = manifest.shard_offsets[shard]
        expected = manifest.shard_offsets[shard + 1] - self.offset
        if self.model.scores["num_docs"] != expected:
            raise BM25IndexError(f"{path}: holds {self.model.scores['num_docs']} documents, manifest says {expected}")
        self.spec = manifest.tokenizer_spec
        self.vocab = self.model.vocab_dict
        if len(self.vocab) != manifest.vocab_size:  # a shard of another build: its term ids mean other terms
            raise BM25IndexError(f"{path}: {len(self.vocab)} terms, manifest says {manifest.vocab_size}; the shard "
                                 f"comes from another build (corpus or tokenizer settings), rebuild the index")
        self.backend = backend
        self.threads = threads

    @property
    def num_docs(self) -> int:
        return int(self.model.scores["num_docs"])

    def term_ids(self, queries: Sequence[str], max_query_chars: int) -> list[np.ndarray]:
        """Indexed term ids of each query, in query order; unknown terms are dropped."""
        tokens = self.spec.tokenize([q[:max_query_chars] if isinstance(q, str) else "" for q in queries])
        return [np.array([self.vocab[t] for t in doc if t in self.vocab], dtype=np.int64) for doc in tokens]

    def top_k(self, queries: Sequence[str], k: int, max_query_chars: int = 1000) -> tuple[np.ndarray, np.ndarray]:
        """(global document index, score) arrays of shape (Q, k); missing slots hold -1 and 0."""
        k = max(1, min(k, self.num_docs))
        ids = self.term_ids(queries, max_query_chars)
        scores = self.model.scores
        args = (scores["data"], scores["indices"], scores["indptr"], self.num_docs, k)
        if self.backend == "numba":
            pointers = np.cumsum([0] + [len(q) for q in ids]).astype(np.int64)
            flat = np.concatenate(ids) if ids else np.zeros(0, np.int64)
            threads = max(1, min(self.threads, numba.config.NUMBA_NUM_THREADS))
            previous = numba.get_num_threads()
            numba.set_num_threads(threads)
            try:
                docs, values = _top_k_batch(flat, pointers, *args, threads)
            finally:
                numba.set_num_threads(previous)
        else:
            docs = np.full((len(ids), k), -1, np.int64)
            values = np.zeros((len(ids), k), np.float32)
            for i, query in enumerate(ids):
                d, v = _top_k_numpy(query, *args)
                docs[i, :len(d)], values[i, :len(v)] = d, v
        docs = np.where(docs >= 0, docs + self.offset, -1)
        return docs, values

    def search(self, queries: Sequence[str], k: int, max_query_chars: int = 1000) -> list[list[Hit]]:
        """Top-k hits per query, with their passages."""
        docs, values = self.top_k(queries, k, max_query_chars)
        results = []
        for row_docs, row_values in zip(docs, values):
            hits = []
            for doc, value in zip(row_docs.tolist(), row_values.tolist()):
                if doc < 0:
                    break
                row = self.model.corpus[doc - self.offset]
                hits.append(Hit(doc, str(row["id"]), row.get("title", ""), row.get("text", ""), value))
            results.append(hits)
        return results


def search_index(index_dir: str | Path, queries: Sequence[str], top_k: int, backend: str = "numba",
                 max_query_chars: int = 1000) -> list[list[Hit]]:
    """Search every shard of an index in this process and merge the results, as the retriever pool does."""
    manifest = IndexManifest.load(index_dir)
    searchers = [ShardSearcher(index_dir, i, backend=backend) for i in range(manifest.num_shards)]
    return merge_hits([s.search(queries, top_k, max_query_chars) for s in searchers], top_k)
