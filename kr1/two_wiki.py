"""Prepare 2WikiMultihopQA question files: load, validate every row, write parquet splits.

    prepare(Path("data/2wiki"))                                              # from the hub
    prepare(Path("data/2wiki"), files={"train": Path("t.jsonl"), "test": Path("t.parquet")})
    python -m pipelines.prepare_data --out data/2wiki [--train t.jsonl ...]  # the same, as a command

The hub dataset is `hzy/kr1_2wiki` (fields `problem`, `golden_answers`); local files
are JSONL or parquet with the same fields. Splits present in the source are kept;
a missing dev split is cut from train (`dev_size` rows, seeded). A bad row stops
the job with its file, row number and field, before anything is written.
"""

from __future__ import annotations

import random
from pathlib import Path

from kr1.atomic_write import atomic_directory, write_json
from kr1.data import DataError, QARecord, load_questions, validate_questions, write_questions_parquet
from kr1.errors import described

HUB_ID = "hzy/kr1_2wiki"
SPLIT_ALIASES = {"train": "train", "dev": "dev", "validation": "dev", "valid": "dev", "test": "test"}


def load_hub_splits(hub_id: str) -> dict[str, list[QARecord]]:
    """Every split of a hub dataset, validated (needs network or the HF cache)."""
    import datasets

    try:
        dataset = datasets.load_dataset(hub_id)
    except Exception as e:  # offline, missing, or private: one line, not a traceback
        raise DataError(f"{hub_id}: cannot load from the hub ({described(e)})") from None
    splits = {}
    for name, rows in dataset.items():
        if name not in SPLIT_ALIASES:
            continue
        splits[SPLIT_ALIASES[name]] = validate_questions(enumerate(rows, start=1), f"{hub_id}:{name}")
    if not splits:
        raise DataError(f"{hub_id}: no train, dev or test split")
    return splits


def carve_dev(splits: dict[str, list[QARecord]], dev_size: int, seed: int) -> dict[str, list[QARecord]]:
    """Hold out `dev_size` seeded-random train rows as dev when the source has no dev split."""
    if "dev" in splits or "train" not in splits or dev_size <= 0:
        return splits
    train = list(splits["train"])
    if dev_size >= len(train):
        raise DataError(f"--dev-size {dev_size} leaves no training rows (train has {len(train)})")
    random.Random(seed).shuffle(train)
    return {**splits, "dev": train[:dev_size], "train": train[dev_size:]}


def prepare(out: Path, hub_id: str | None = HUB_ID, files: dict[str, Path] | None = None,
            dev_size: int = 1000, seed: int = 0) -> dict[str, int]:
    """Validate all rows first, then write `out/{split}.parquet` and a manifest atomically."""
    files = {k: v for k, v in (files or {}).items() if v is not None}
    splits = ({split: load_questions(path) for split, path in files.items()} if files
              else load_hub_splits(hub_id or HUB_ID))
    splits = carve_dev(splits, dev_size, seed)
    counts = {split: len(rows) for split, rows in splits.items()}
    with atomic_directory(out) as tmp:
        for split, rows in splits.items():
            write_questions_parquet(tmp / f"{split}.parquet", rows)
        sources = {k: str(v) for k, v in files.items()} if files else {"hub": hub_id}
        write_json(tmp / "manifest.json", {"counts": counts, "sources": sources, "dev_size": dev_size, "seed": seed})
    return counts
