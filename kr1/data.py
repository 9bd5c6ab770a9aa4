"""Question and corpus files: reading, validating and writing them.

Questions follow the 2WikiMultihopQA schema of the hub dataset `hzy/kr1_2wiki`:
`problem` (the question) and `golden_answers` (a list of accepted aliases), plus the
optional `id`, `type`, `supporting_titles` and `dataset` (the benchmark a row came
from). They are read from JSONL or parquet; every row is validated and a bad one
raises `DataError` naming the file, the row (1-based) and the field.

Corpora are JSONL in the wiki2018 layout, one passage a line: either
`{"id", "title", "text"}` or `{"id", "contents"}` where the first line of `contents`
is the (optionally quoted) title. `.gz` files are read transparently.
"""

from __future__ import annotations

import gzip
import json
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from kr1.atomic_write import atomic_file
from kr1.errors import UserError, first_line

# 2WikiMultihopQA's four, HotpotQA's bridge, and the warm start's single-hop questions
QUESTION_TYPES = ("compositional", "comparison", "inference", "bridge_comparison", "bridge", "single_hop", "")


class DataError(UserError, ValueError):
    """A dataset or corpus file that cannot be used (one-line message naming file, row, field)."""


# what reading a `.gz` file that is not gzip (or is cut short, or corrupt) raises
GZIP_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error)


@dataclass
class QARecord:
    """One question with its accepted answers."""

    id: str
    problem: str
    golden_answers: list[str]
    # compositional | comparison | inference | bridge_comparison | single_hop ("" when unknown)
    type: str = ""
    # titles of the passages whose facts the answer needs (empty when unknown)
    supporting_titles: list[str] = field(default_factory=list)
    # the benchmark it came from (nq, hotpotqa, ...; "" for a single-source file), for mixtures' metrics
    dataset: str = ""

    def to_row(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Passage:
    """One retrievable passage of a corpus."""

    id: str
    title: str
    text: str

    def to_row(self) -> dict[str, str]:
        return {"id": self.id, "title": self.title, "text": self.text}

    @property
    def contents(self) -> str:
        """Title and text as one string: what BM25 indexes and the model reads."""
        return f"{self.title}\n{self.text}" if self.title else self.text


def _string_list(value: Any, where: str, name: str, allow_empty: bool) -> list[str]:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise DataError(f"{where}: field '{name}' must be a list of strings, got {type(value).__name__}")
    items = []
    for item in value:
        if not isinstance(item, str):
            raise DataError(f"{where}: field '{name}' holds a {type(item).__name__}, expected strings")
        if item.strip():
            items.append(item.strip())
    if not items and not allow_empty:
        raise DataError(f"{where}: field '{name}' has no non-empty answer")
    return items


def validate_question(row: Any, where: str, default_id: str, question_field: str = "problem") -> QARecord:
    """Check one raw row against the question schema; `where` is 'file: row N'. `question_field` names the
    question's field in the source (FlashRAG's files call it `question`)."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if row.get(question_field) is None:
        raise DataError(f"{where}: missing field '{question_field}'")
    problem = row[question_field]
    if not isinstance(problem, str) or not problem.strip():
        raise DataError(f"{where}: field '{question_field}' must be a non-empty string")
    if row.get("golden_answers") is None:
        raise DataError(f"{where}: missing field 'golden_answers'")
    answers = _string_list(row["golden_answers"], where, "golden_answers", allow_empty=False)
    raw_id = row.get("id")
    if raw_id is None or (isinstance(raw_id, str) and not raw_id.strip()):
        raw_id = default_id
    if not isinstance(raw_id, (str, int)) or isinstance(raw_id, bool):
        raise DataError(f"{where}: field 'id' must be a string or an integer")
    qtype = row.get("type") or ""
    if qtype not in QUESTION_TYPES:
        raise DataError(f"{where}: field 'type' is {qtype!r}, not one of {', '.join(t for t in QUESTION_TYPES if t)}")
    titles = _string_list(row.get("supporting_titles") or [], where, "supporting_titles", allow_empty=True)
    dataset = row.get("dataset") or ""
    if not isinstance(dataset, str):
        raise DataError(f"{where}: field 'dataset' must be a string")
    return QARecord(str(raw_id), problem.strip(), answers, qtype, titles, dataset)


def validate_questions(numbered_rows: Iterable[tuple[int, Any]], origin: str,
                       parse: Callable[[Any, str, int], QARecord] | None = None) -> list[QARecord]:
    """Validate (row number, row) pairs and reject duplicate ids and empty files; `parse(row, where, number)`
    reads another source schema into a question (default: kr1's own)."""
    records: list[QARecord] = []
    seen: dict[str, int] = {}
    for number, row in numbered_rows:
        where = f"{origin}: row {number}"
        record = parse(row, where, number) if parse else \
            validate_question(row, where, default_id=f"{Path(origin).stem}-{number}")
        if record.id in seen:
            raise DataError(f"{origin}: row {number}: field 'id' {record.id!r} repeats row {seen[record.id]}")
        seen[record.id] = number
        records.append(record)
    if not records:
        raise DataError(f"{origin}: no questions")
    return records


def not_utf8(e: UnicodeDecodeError) -> str:
    """What is wrong with a line that is not UTF-8, for a message naming its file and row."""
    return f"not valid UTF-8 ({e.reason} at byte {e.start + 1} of the line)"


def jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed object) for each non-blank line; lines end at "\n", as the index build splits them."""
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(f"{path}: row {number}: {not_utf8(e)}") from None
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}: row {number}: not valid JSON ({e.msg})") from None
                yield number, row
    except GZIP_ERRORS as e:
        raise DataError(f"{path}: not a readable gzip file ({e})") from None


def load_questions(path: str | Path) -> list[QARecord]:
    """Read and validate a question file (.jsonl, .jsonl.gz or .parquet)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: question file not found")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as e:
            raise DataError(f"{path}: cannot read parquet ({first_line(e)})") from None
        return validate_questions(enumerate(rows, start=1), str(path))
    return validate_questions(jsonl_rows(path), str(path))


def load_question_files(paths: Sequence[str | Path]) -> list[QARecord]:
    """Several question files as one list (a training mixture), in the given order; an id in two files
    is an error naming both."""
    records: list[QARecord] = []
    owner: dict[str, Path] = {}
    for path in map(Path, paths):
        for record in load_questions(path):
            if record.id in owner:
                raise DataError(f"{path}: field 'id' {record.id!r} is also in {owner[record.id]} "
                                "(prepare benchmarks with pipelines.prepare_benchmarks: it prefixes ids)")
            owner[record.id] = path
            records.append(record)
    return records


def write_questions_parquet(target: Path, records: Sequence[QARecord]) -> None:
    """Write validated questions as parquet, atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([
        ("id", pa.string()), ("problem", pa.string()), ("golden_answers", pa.list_(pa.string())),
        ("type", pa.string()), ("supporting_titles", pa.list_(pa.string())), ("dataset", pa.string()),
    ])
    table = pa.Table.from_pylist([r.to_row() for r in records], schema=schema)
    with atomic_file(target, "wb") as handle:
        pq.write_table(table, handle)


def _title_from_contents(contents: str) -> tuple[str, str]:
    # wiki2018 (Search-R1 / FlashRAG): first line is the title, often in double quotes
    title, _, text = contents.partition("\n")
    title = title.strip()
    if len(title) >= 2 and title[0] == title[-1] == '"':
        title = title[1:-1]
    return title, text.strip()


def passage_from_row(row: Any, where: str) -> Passage:
    """One corpus row in either wiki2018 layout."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if "id" not in row or row["id"] is None:
        raise DataError(f"{where}: missing field 'id'")
    if "text" in row:
        text, title = row["text"], row.get("title") or ""
        if not isinstance(text, str) or not isinstance(title, str):
            raise DataError(f"{where}: fields 'title' and 'text' must be strings")
    elif "contents" in row:
        if not isinstance(row["contents"], str):
            raise DataError(f"{where}: field 'contents' must be a string")
        title, text = _title_from_contents(row["contents"])
    else:
        raise DataError(f"{where}: missing field 'text' (or 'contents')")
    if not (title.strip() or text.strip()):
        raise DataError(f"{where}: passage is empty")
    return Passage(str(row["id"]), title.strip(), text.strip())


def iter_corpus(path: str | Path) -> Iterator[tuple[int, Passage]]:
    """Stream (row number, passage) pairs of a JSONL corpus, validating each."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: corpus file not found")
    for number, row in jsonl_rows(path):
        yield number, passage_from_row(row, f"{path}: row {number}")


def load_corpus(path: str | Path) -> list[Passage]:
    """All passages of a corpus; an empty corpus or a repeated id is an error."""
    passages: list[Passage] = []
    seen: set[str] = set()
    for number, passage in iter_corpus(path):
        if passage.id in seen:
            raise DataError(f"{path}: row {number}: field 'id' {passage.id!r} is repeated")
        seen.add(passage.id)
        passages.append(passage)
    if not passages:
        raise DataError(f"{path}: corpus is empty")
    return passages
