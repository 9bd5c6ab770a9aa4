"""The training split's supporting paragraphs that a corpus lacks, appended to it as it is written.

    extra = TrainParagraphs.load("data/flashrag", ["hotpotqa", "2wikimultihopqa", "musique"])
    for passage in corpus: extra.see(passage.title)      # while kr1.retrieval.wiki18 copies the corpus
    added = extra.write_missing(writer)                  # then one passage per missing supporting title

Standard wiki-18 lacks many of the passages HotpotQA, 2WikiMultihopQA and MuSiQue questions are
built on (`python -m kr1.coverage` measures how many). The benchmarks ship those paragraphs with
each question: FlashRAG's `metadata.context` (HotpotQA's `{"title", "sentences"}`, 2Wiki's
`{"title", "content"}`, or the original `[[title, [sentence, ...]], ...]`) and MuSiQue's
`metadata.paragraphs` (`title`, `paragraph_text`). Only `<name>/train.jsonl` is ever read: adding
dev or test evidence to the search corpus would let the retriever find what the standard corpus
cannot, so evaluation scores would stop measuring retrieval over wiki-18. A title matches as
the evidence reward matches it (kr1.retrieval.coverage.title_key).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from kr1.benchmarks import TRAIN_SPLITS, row_metadata, supporting_titles
from kr1.data import DataError, jsonl_rows
from kr1.errors import described
from kr1.retrieval.corpus_file import CorpusWriter
from kr1.retrieval.coverage import title_key

SPLIT = "train"  # the one split whose evidence may enter the search corpus
ID_PREFIX = "kr1-train"


def train_file(source: str, name: str) -> Path:
    """`<name>/train.jsonl` in a local folder of FlashRAG's layout, or downloaded from that hub dataset."""
    relative = f"{name}/{SPLIT}.jsonl"
    local = Path(source).expanduser()
    if local.is_dir():
        if not (local / relative).is_file():
            raise DataError(f"{local / relative}: training file not found")
        return local / relative
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(source, relative, repo_type="dataset"))
    except Exception as e:
        raise DataError(f"{source}:{relative}: cannot download ({described(e)})") from None


def _rows(path: Path) -> Iterator[tuple[str, dict]]:
    """(where, metadata) of every row of a FlashRAG question file."""
    for number, row in jsonl_rows(path):
        where = f"{path}: row {number}"
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
        yield where, row_metadata(row, where)


def _text(body: Any) -> str:
    if isinstance(body, str):
        return body.strip()
    if isinstance(body, (list, tuple)):
        return " ".join(s.strip() for s in body if isinstance(s, str) and s.strip())
    return ""


def paragraphs(meta: dict) -> dict[str, tuple[str, str]]:
    """{title key: (title, text)} of the paragraphs a question's metadata carries, first of each title kept."""
    context = meta.get("context")
    pairs: list[tuple[Any, Any]] = []
    if isinstance(context, dict):
        pairs += zip(context.get("title") or [], context.get("sentences") or context.get("content") or [])
    elif isinstance(context, list):
        pairs += [(c[0], c[1]) for c in context if isinstance(c, (list, tuple)) and len(c) == 2]
    pairs += [(p.get("title"), p.get("paragraph_text")) for p in meta.get("paragraphs") or [] if isinstance(p, dict)]
    found: dict[str, tuple[str, str]] = {}
    for title, body in pairs:
        if isinstance(title, str) and (text := _text(body)):
            found.setdefault(title_key(title), (title.strip(), text))
    return found


@dataclass
class TrainParagraphs:
    """The training files' supporting titles, which of them the corpus holds, and what was added."""

    files: dict[str, Path]  # benchmark -> its train.jsonl
    wanted: set[str]
    present: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, source: str, names: Sequence[str]) -> "TrainParagraphs":
        unknown = [n for n in names if n not in TRAIN_SPLITS]
        if unknown or not names:
            raise DataError(f"--add-train-paragraphs: {', '.join(unknown) or 'no benchmark named'} "
                            f"(those with a train split: {', '.join(TRAIN_SPLITS)})")
        files = {name: train_file(source, name) for name in names}
        wanted = {title_key(t) for path in files.values() for _, meta in _rows(path) for t in supporting_titles(meta)}
        return cls(files, wanted)

    def see(self, title: str) -> None:
        """A corpus passage's title, as the corpus streams by."""
        if (key := title_key(title)) in self.wanted:
            self.present.add(key)

    def write_missing(self, writer: CorpusWriter) -> dict[str, Any]:
        """Append one passage per supporting title the corpus lacks, each once; returns what was added per
        benchmark, and how many missing titles had no paragraph to add."""
        added: Counter[str] = Counter()
        no_paragraph: set[str] = set()
        for name, path in self.files.items():
            for _, meta in _rows(path):
                available = paragraphs(meta)
                for key in map(title_key, supporting_titles(meta)):
                    if key in self.present:
                        continue
                    if key not in available:
                        no_paragraph.add(key)
                        continue
                    title, text = available[key]
                    writer.write_row({"id": f"{ID_PREFIX}-{name}-{added[name]}", "title": title, "text": text})
                    added[name] += 1
                    self.present.add(key)
        return {"split": SPLIT, "source": {n: str(p) for n, p in self.files.items()}, "added": dict(added),
                "missing_without_paragraph": len(no_paragraph - self.present)}

