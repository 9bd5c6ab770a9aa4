"""A wiki-like corpus of any size, to measure retrieval at scale: wiki-18's shape without its text.

    generate("wiki_like.jsonl", 4_000_000, seed=0)     # python -m pipelines.wiki_like_corpus writes one
    queries = wiki_like_queries(2000)

Passages are 100 words long, as wiki-18's (DPR's 100-word splits of Wikipedia), with a title of
1-3 words, in wiki2018's JSONL layout (`id`, `title`, `text`). Words follow Zipf's law (exponent
1 up to rank 10,000, 1.75 beyond) over a vocabulary of millions of made-up words: the most
frequent ranks are English stopwords (the tokenizer drops them, as it drops about a third of
Wikipedia's tokens), then pronounceable syllable strings, short for frequent ranks and long for
rare ones, so postings lengths and query costs resemble Wikipedia's. `wiki_like_queries` draws
queries the same way: 2-8 terms, some frequent, some rare. Seeded: the same arguments give the
same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from kr1.atomic_write import atomic_file

WORDS_PER_PASSAGE = 100
# the ranks above the made-up words: the most frequent English words, most of them stopwords
STOPWORDS = ("the of and in to a was is for on as by with he that at from his it an were are which this also be or "
             "has had first not their after but its who new one they have she two her been other when there all "
             "during into time").split()
ONSETS = ("b c d f g h j k l m n p r s t v w z br cr dr fr gr kl pl st tr sh ch th").split()
VOWELS = ("a e i o u ai ea ou").split()
CODAS = ("", "n", "r", "s", "l", "m", "x", "nd")
CACHED_RANKS = 1_000_000
# the word-frequency law, calibrated so that distinct terms grow as wiki-18's: ~1.05M at 1M passages,
# ~5.5M at 21M (wiki-18: 5.35M), stopwords about a third of the words
VOCAB, KNEE, TAIL_EXPONENT = 30_000_000, 10_000, 1.75
SYLLABLES = [o + v + c for o in ONSETS for v in VOWELS for c in CODAS]  # 1,792: ranks in base 1,792


def word(rank: int) -> str:
    """The word of a frequency rank: a stopword, or the rank's digits in base len(SYLLABLES) as syllables."""
    if rank < len(STOPWORDS):
        return STOPWORDS[rank]
    n, parts = rank - len(STOPWORDS), []
    while True:
        n, digit = divmod(n, len(SYLLABLES))
        parts.append(SYLLABLES[digit])
        if n == 0:
            return "".join(reversed(parts))
        n -= 1  # bijective numbering: every string of syllables is one rank


def zipf_cdf(vocab: int = VOCAB, knee: int = KNEE, tail_exponent: float = TAIL_EXPONENT,
             shift: float = 2.7) -> np.ndarray:
    """Cumulative word probabilities over ranks 0..vocab-1: p(r) ~ 1 / (r + shift) up to the knee, falling
    as the `tail_exponent` power beyond it (the two regimes of word frequencies in large corpora)."""
    ranks = np.arange(vocab, dtype=np.float64) + shift
    weights = 1.0 / ranks
    tail = slice(knee, None)
    weights[tail] = (1.0 / ranks[knee]) * (ranks[knee] / ranks[tail]) ** tail_exponent
    cdf = np.cumsum(weights)
    return cdf / cdf[-1]


def generate(out: str | Path, passages: int, seed: int = 0, progress: bool = True, block: int = 20000) -> Path:
    """Write `passages` passages to `out` (JSONL, atomically)."""
    rng = np.random.default_rng(seed)
    cdf = zipf_cdf()
    cache: dict[int, str] = {}  # the frequent ranks' words, built once

    def lookup(rank: int) -> str:
        text = cache.get(rank)
        if text is None:
            text = word(rank)
            if rank < CACHED_RANKS:
                cache[rank] = text
        return text

    def words(ranks: np.ndarray) -> np.ndarray:
        unique, inverse = np.unique(ranks, return_inverse=True)
        return np.array([lookup(r) for r in unique.tolist()], dtype=object)[inverse]

    out = Path(out)
    with atomic_file(out) as handle, tqdm(total=passages, desc="wiki_like_corpus", unit="passage",
                                          disable=not progress) as bar:
        for first in range(0, passages, block):
            n = min(block, passages - first)
            text = words(np.searchsorted(cdf, rng.random(n * WORDS_PER_PASSAGE)).reshape(n, WORDS_PER_PASSAGE))
            # titles: 1-3 words of middling frequency (names, places, topics)
            title_len = rng.integers(1, 4, n)
            titles = words(rng.integers(len(STOPWORDS), 200_000, (n, 3)))
            lines = []
            for i in range(n):
                title = " ".join(w.capitalize() for w in titles[i, :title_len[i]])
                lines.append(json.dumps({"id": str(first + i), "title": title, "text": " ".join(text[i])},
                                        separators=(",", ":")) + "\n")
            handle.write("".join(lines))
            bar.update(n)
    return out


def wiki_like_queries(count: int, seed: int = 0) -> list[str]:
    """`count` queries of 2-8 words: half drawn by corpus frequency, half rare (log-uniform ranks 1e3-2e5)."""
    rng = np.random.default_rng(seed + 1_000_003)  # another stream than the corpus's
    cdf = zipf_cdf()
    queries = []
    for _ in range(count):
        length = int(rng.integers(2, 9))
        frequent = np.searchsorted(cdf, rng.random(length))
        rare = np.exp(rng.uniform(np.log(1e3), np.log(2e5), length)).astype(np.int64)
        ranks = np.where(rng.random(length) < 0.5, frequent, rare)
        queries.append(" ".join(word(int(r)) for r in ranks))
    return queries
