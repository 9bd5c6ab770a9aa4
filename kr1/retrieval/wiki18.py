"""Fetch wiki-18 (Wikipedia, Dec 2018, in DPR's 100-word passages) and write it as the JSONL the index reads.

    prepare_corpus(Path("data/wiki-18.jsonl"))                                  # Search-R1's copy, from the hub
    prepare_corpus(Path("data/wiki-18.jsonl"), source=Path("wiki-18.jsonl.gz"))  # offline
    python -m pipelines.prepare_corpus --out data/wiki-18.jsonl [--layout flashrag]   # the same, as a command

Two published copies, one row layout (`{"id", "contents"}`, the quoted title on the first line of
`contents`): Search-R1's `PeterJinGo/wiki-18-corpus` file `wiki-18.jsonl.gz`, and FlashRAG's
`RUC-NLPIR/FlashRAG_datasets` file `retrieval-corpus/wiki18_100w.zip` (one JSONL inside). Both are hub
dataset repos, fetched with `huggingface_hub.hf_hub_download` into the hub cache (an interrupted
download resumes where it stopped). `source` (`--source`) reads a local copy instead: the file itself (`.jsonl`,
`.jsonl.gz` or `.zip`), or a folder holding it at its repo path (a hub snapshot). Rows are streamed
from the compressed file to the output, each one validated as `kr1.data` reads a corpus (a bad row
stops the job with its file and row, and nothing is written), and copied unchanged. The output appears
whole or not at all, with `<out>.meta.json` beside it: rows, sha256, source. Repeated ids are found by
`pipelines.build_index`, which hashes every id anyway. `extra` (`--add-train-paragraphs`) appends, after the
corpus, the supporting paragraphs of those benchmarks' *training* questions that it lacks
(kr1/retrieval/train_paragraphs.py; `python -m kr1.coverage` measures what is missing), recorded in the
sidecar under `train_paragraphs`.
"""

from __future__ import annotations

import gzip
import json
import zipfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

from tqdm.auto import tqdm

from kr1.data import GZIP_ERRORS, DataError, Passage, not_utf8, passage_from_row
from kr1.errors import described, writes_to
from kr1.retrieval.corpus_file import corpus_writer
from kr1.retrieval.train_paragraphs import TrainParagraphs


@dataclass(frozen=True)
class HubCorpus:
    """Where a published copy of wiki-18 lies on the hub."""

    repo_id: str
    filename: str  # path inside the dataset repo


LAYOUTS = {
    "search-r1": HubCorpus("PeterJinGo/wiki-18-corpus", "wiki-18.jsonl.gz"),
    "flashrag": HubCorpus("RUC-NLPIR/FlashRAG_datasets", "retrieval-corpus/wiki18_100w.zip"),
}
PROGRESS_EVERY = 10_000  # rows between progress-bar updates (tqdm per row would cost more than the parsing)


def download(layout: str, revision: str | None = None, cache_dir: Path | None = None) -> Path:
    """The layout's file in the hub cache, downloaded (or resumed) if it is not there."""
    from huggingface_hub import hf_hub_download

    hub = LAYOUTS[layout]
    try:
        return Path(hf_hub_download(hub.repo_id, hub.filename, repo_type="dataset", revision=revision,
                                    cache_dir=cache_dir))
    except Exception as e:  # offline, missing, or a broken connection: one line, not a traceback
        raise DataError(f"{hub.repo_id}:{hub.filename}: cannot download ({described(e)}); "
                        "an interrupted download resumes when run again, or give a local copy with --source") from None


def local_source(source: Path, layout: str) -> Path:
    """The corpus file a `--source` names: the file, or the layout's file inside a folder (a hub snapshot)."""
    if source.is_dir():
        inside = source / LAYOUTS[layout].filename
        if not inside.is_file():
            raise DataError(f"{source}: --source folder holds no {LAYOUTS[layout].filename} (the {layout} layout)")
        return inside
    if not source.is_file():
        raise DataError(f"{source}: --source not found")
    return source


def _lines(path: Path, raw: BinaryIO, stack: ExitStack) -> tuple[Iterator[bytes], str]:
    """The JSONL lines inside `path` (plain, gzip or a zip holding one .jsonl), and the name rows are reported
    under (`archive.zip:member.jsonl` for a zip)."""
    if path.suffix == ".gz":
        return stack.enter_context(gzip.GzipFile(fileobj=raw)), str(path)
    if path.suffix == ".zip":
        try:
            archive = stack.enter_context(zipfile.ZipFile(raw))
        except zipfile.BadZipFile as e:
            raise DataError(f"{path}: not a readable zip file ({e})") from None
        members = [m for m in archive.namelist() if m.endswith(".jsonl") and not m.startswith("__MACOSX")]
        if len(members) != 1:
            raise DataError(f"{path}: expected one .jsonl inside, found {len(members)} ({', '.join(members[:5])})")
        return stack.enter_context(archive.open(members[0])), f"{path}:{members[0]}"
    return raw, str(path)


def copy_corpus(source: Path, out: Path, progress: bool = True, extra: TrainParagraphs | None = None,
                **meta: str) -> int:
    """Validate every row of `source` and copy it to `out` (atomically, sidecar beside it), then append what
    `extra` finds missing; returns the rows written."""
    with ExitStack() as stack:
        raw = stack.enter_context(open(source, "rb"))
        lines, origin = _lines(source, raw, stack)
        bar = stack.enter_context(tqdm(total=source.stat().st_size, unit="B", unit_scale=True, desc="prepare_corpus",
                                       disable=not progress))
        with writes_to("the corpus", out.parent), corpus_writer(out, source=str(source), **meta) as writer:
            number = 0
            try:
                for number, line in enumerate(lines, start=1):
                    passage = _check_line(line, f"{origin}: row {number}")
                    if passage is not None:
                        writer.write_line(line)
                        if extra is not None:
                            extra.see(passage.title)
                    if number % PROGRESS_EVERY == 0:
                        bar.update(raw.tell() - bar.n)
            except (*GZIP_ERRORS, zipfile.BadZipFile) as e:  # cut short or corrupt past its header
                after = f" after row {number}" if number else ""
                raise DataError(f"{origin}: not readable{after} ({e})") from None
            bar.update(raw.tell() - bar.n)
            if not writer.rows:
                raise DataError(f"{origin}: corpus is empty")
            if extra is not None:
                writer.meta["train_paragraphs"] = extra.write_missing(writer)
            return writer.rows


def _check_line(line: bytes, where: str) -> Passage | None:
    """One corpus line as kr1.data reads it: UTF-8, JSON, a passage of either wiki2018 layout; blank is fine."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{where}: {not_utf8(e)}") from None
    if not text.strip():
        return None
    try:
        row = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: not valid JSON ({e.msg})") from None
    return passage_from_row(row, where)


def prepare_corpus(out: Path, layout: str = "search-r1", source: Path | None = None, revision: str | None = None,
                   cache_dir: Path | None = None, progress: bool = True, extra: TrainParagraphs | None = None) -> int:
    """wiki-18 from a local copy or the hub into `out`, validated, and `extra`'s missing training paragraphs
    after it; returns the number of passages."""
    if layout not in LAYOUTS:
        raise DataError(f"unknown corpus layout {layout!r} (known: {', '.join(LAYOUTS)})")
    if source is not None:
        return copy_corpus(local_source(Path(source), layout), Path(out), progress, extra, layout=layout)
    path = download(layout, revision, cache_dir)
    hub = LAYOUTS[layout]
    return copy_corpus(path, Path(out), progress, extra, layout=layout, repo_id=hub.repo_id, filename=hub.filename,
                       revision=revision or "main")
