"""The warm start kr1 ships: the embedded default's tiny model, built once by a kr1 command and loaded in seconds.

    shipped = shipped_model(key)        # the shipped directory when it was built for `key`, checksums checked
    write_provenance(out, key, command, seed, settings)   # what `python -m kr1.warm_start --ship` records

`key` names everything the warm start depends on (world and bootstrap versions, world seed and size,
model size, warm-start settings, seed): the name of the cache directory a run would otherwise build
it in. A run whose key is the shipped one's loads the shipped files after checking each file's
sha256 against `provenance.json`; any other key builds its own warm start as before, and a key that
differs only in the world or bootstrap version (kr1's world generator or tokenizer changed since the
file was built) is told so, with the command that builds a new one.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from kr1.errors import UserError

SHIPPED_DIR = Path(__file__).resolve().parents[1] / "models" / "default_warm_start"
PROVENANCE = "provenance.json"
SHIP_COMMAND = "python -m kr1.warm_start --ship"
_VERSIONS = re.compile(r"^world(\d+)-(.*)-model(\d+)-(.*)$")


class ShippedModelError(UserError):
    """The shipped warm start's files do not match their recorded checksums (damaged or edited)."""


def file_digests(directory: Path) -> dict[str, str]:
    """sha256 of every file of a model directory but the provenance record, by name."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())
            if p.is_file() and p.name != PROVENANCE}


def write_provenance(directory: Path, key: str, command: str, seed: int, settings: dict[str, Any]) -> dict:
    """Record how the model in `directory` was built, and each file's checksum, beside it."""
    record = {"key": key, "command": command, "seed": seed, "settings": settings,
              "sha256": file_digests(directory)}
    (directory / PROVENANCE).write_text(json.dumps(record, indent=2) + "\n")
    return record


def read_provenance(directory: Path = SHIPPED_DIR) -> dict | None:
    path = directory / PROVENANCE
    return json.loads(path.read_text()) if path.is_file() else None


def version_mismatch(shipped_key: str, key: str) -> str | None:
    """How `key` differs from the shipped one when only the world or bootstrap version does, else None."""
    a, b = _VERSIONS.match(shipped_key), _VERSIONS.match(key)
    if not a or not b or (a[2], a[4]) != (b[2], b[4]) or (a[1], a[3]) == (b[1], b[3]):
        return None
    return f"it was built for world version {a[1]} and bootstrap version {a[3]}, this kr1 makes {b[1]} and {b[3]}"


def shipped_model(key: str, directory: Path = SHIPPED_DIR) -> tuple[Path | None, str | None]:
    """(the shipped model's directory, None) when it was built for `key` and its files are whole; (None, a note)
    when kr1's world or tokenizer changed since it was built; (None, None) for any other key."""
    record = read_provenance(directory)
    if record is None:
        return None, None
    if record["key"] != key:
        why = version_mismatch(record["key"], key)
        return None, why and (f"the shipped warm start {directory} does not match: {why}; building one for this "
                               f"run (ship a new one with `{SHIP_COMMAND}`)")
    found = file_digests(directory)
    for name, digest in record["sha256"].items():
        if found.get(name) != digest:
            state = "is missing" if name not in found else "differs from its recorded sha256"
            raise ShippedModelError(f"{directory / name} {state} ({directory / PROVENANCE}): reinstall kr1, or "
                                    f"rebuild it with `{record['command']}`")
    extra = sorted(set(found) - set(record["sha256"]))
    if extra:
        raise ShippedModelError(f"{directory} holds files its {PROVENANCE} does not list ({', '.join(extra)}): "
                                f"rebuild it with `{record['command']}`")
    return directory, None
