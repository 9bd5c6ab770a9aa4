"""One row of the benchmark table, and the markdown table that `python -m kr1.bench` prints.

    rows = [Row("retrieval", "pool, 2 shards vs bm25s", "4,100 q/s", "3,900 q/s", 1.05, ">= 0.8x", met(True))]
    print(markdown_table(rows))

`ratio` is the figure a row's goal is judged on (kr1 over baseline, a share of the
step, or a growth factor); every row has one, so a table can be checked by machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

COLUMNS = ("benchmark", "setting", "kr1", "baseline", "ratio", "goal", "met", "notes")


@dataclass(frozen=True)
class Row:
    benchmark: str
    setting: str
    kr1: str  # kr1's figure, with its unit
    baseline: str  # what it is compared with ("-" when nothing is)
    ratio: float
    goal: str = "-"
    met: str = "-"  # yes | no | - (no goal)
    notes: str = ""


def met(ok: bool) -> str:
    return "yes" if ok else "no"


def fmt_ratio(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    return f"{value:.3f}" if abs(value) < 0.1 else f"{value:.2f}"


def markdown_table(rows: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        cells = (r.benchmark, r.setting, r.kr1, r.baseline, fmt_ratio(r.ratio), r.goal, r.met, r.notes or "")
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def parse_table(text: str) -> list[dict[str, str]]:
    """The rows of a table written by `markdown_table` (for tests and for reading old results)."""
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == len(COLUMNS) and cells[0] != COLUMNS[0] and not set(cells[0]) <= set("-"):
            rows.append(dict(zip(COLUMNS, cells)))
    return rows
