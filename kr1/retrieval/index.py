"""A sharded BM25 index whose shards score with global corpus statistics.

An index directory holds `manifest.json` and one bm25s index per shard
(`shard_000/`, ...), each loadable with `bm25s.BM25.load(dir, mmap=True)`.
`kr1.retrieval.chunked_build` writes them (`kr1.run.index_build` runs it as Ray tasks, behind
`python -m pipelines.build_index`).

Every shard shares the global vocabulary and bakes the *global* idf and average
document length into its score matrix, so the union of per-shard top-k lists,
merged by score, equals the top-k of one index over the whole corpus.
Scores are BM25 with the Lucene idf, as bm25s computes them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import bm25s
import numpy as np

from kr1.atomic_write import write_json
from kr1.errors import UserError, first_line

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
        return self._tokenize(texts, return_ids=False)

    def tokenize_ids(self, texts: Sequence[str]) -> Any:
        """bm25s's Tokenized: per text its term ids, and the {term: id} of the terms these texts hold (cheaper
        than strings for a corpus: no term is rebuilt per occurrence)."""
        return self._tokenize(texts, return_ids=True)

    def _tokenize(self, texts: Sequence[str], return_ids: bool) -> Any:
        stemmer = None
        if self.stemmer:
            import Stemmer

            stemmer = Stemmer.Stemmer(self.stemmer)
        return bm25s.tokenize(list(texts), lower=self.lower, token_pattern=self.token_pattern,
                              stopwords=self.stopwords, stemmer=stemmer, return_ids=return_ids,
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


# a shard's score matrix (CSC) as bm25s saves it, and the JSON files beside it
SCORE_ARRAYS = ("data", "indices", "indptr")
SHARD_JSON = ("params.index.json", "vocab.index.json", "corpus.mmindex.json")


def load_array(path: Path) -> np.ndarray:
    """A memory-mapped .npy file of an index; a truncated or damaged one is a BM25IndexError naming it."""
    try:
        return np.load(path, mmap_mode="r")
    except (OSError, ValueError, EOFError) as e:
        raise BM25IndexError(f"{path}: unreadable ({first_line(e)}); the index is damaged, rebuild it") from None


def check_score_arrays(path: Path) -> np.ndarray:
    """The shard's score arrays readable and of one matrix (data and indices as long as indptr says): its indptr.
    Reads file headers and the last entry of indptr."""
    data, indices, indptr = (load_array(path / f"{name}.csc.index.npy") for name in SCORE_ARRAYS)
    postings = int(indptr[-1]) if len(indptr) else 0
    for name, array in (("data", data), ("indices", indices)):
        if array.shape != (postings,):
            raise BM25IndexError(f"{path / f'{name}.csc.index.npy'}: shape {array.shape}, indptr says ({postings},); "
                                 "the index is damaged, rebuild it")
    return indptr


def unreadable_shard(path: Path, error: BaseException) -> BM25IndexError:
    """The error for a shard that bm25s could not load, naming the file at fault where one is found."""
    for name in SHARD_JSON:
        try:
            json.loads((path / name).read_bytes())
        except (OSError, ValueError) as e:
            return BM25IndexError(f"{path / name}: unreadable ({first_line(e)}); the index is damaged, rebuild it")
    return BM25IndexError(f"{path}: unreadable shard ({first_line(error)}); the index is damaged, rebuild it")


def check_index(index_dir: str | Path, num_shards: int | None = None) -> IndexManifest:
    """The manifest, once the index is known to be usable: the shard count asked for, every shard
    present, and each shard's vocabulary the manifest's (a shard from another build, with other
    tokenizer settings or another corpus, has another one), and its score arrays readable. Reads no more
    than file headers and one entry of each shard's indptr."""
    manifest = IndexManifest.load(index_dir)
    if num_shards is not None and num_shards != manifest.num_shards:
        raise BM25IndexError(f"{index_dir}: index has {manifest.num_shards} shards but retriever.num_shards="
                             f"{num_shards}; rebuild the index or set retriever.num_shards={manifest.num_shards}")
    for shard in range(manifest.num_shards):
        path = shard_dir(index_dir, shard)
        if not (path / "params.index.json").is_file() or not (path / "indptr.csc.index.npy").is_file():
            raise BM25IndexError(f"{path}: shard files missing; the index is incomplete, rebuild it")
        terms = check_score_arrays(path).shape[0] - 1  # the score matrix has one column per term
        if terms != manifest.vocab_size:
            raise BM25IndexError(f"{path}: {terms} terms, manifest says {manifest.vocab_size}; the shard comes "
                                 f"from another build (corpus or tokenizer settings), rebuild the index")
    return manifest
