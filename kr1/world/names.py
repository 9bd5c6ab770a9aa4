"""The synthetic world's names, and how large a world they can name.

    names = NameMaker(random.Random(seed))             # names.unique(lambda: f"{names.pick('first')} ...")
    check_size(people, avoid)                          # a world of `people` fits, or a one-line WorldSizeError

Every name combines words of fixed inventories (150 first names, 150 family names, 150 title words, 100
organisation words, ...), the same for every seed, so another seed's world reads alike. The
inventories make a fixed number of names of each kind, so a world holds at most MAX_PEOPLE people
(organisation names run out first); `--avoid` shares them with the world it is built beside.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Sequence

from kr1.errors import UserError

ONSETS = ["b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr",
          "kr", "th", "tr", "st", "sh", "vel", "mor", "cal", "dor", "fen", "jor", "quil"]
VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "io", "ou", "y"]
CODAS = ["", "", "n", "r", "l", "s", "th", "rn", "nd", "x", "m", "sk"]
TITLE_NOUNS = ["Lantern", "Harbor", "Orchard", "Tower", "River", "Garden", "Mirror", "Bridge", "Winter",
               "Voyage", "Crown", "Letter", "Island", "Shadow", "Bell", "Feather", "Gate", "Mask"]
ORG_KINDS = ["Pictures", "Institute", "Records", "Foundation", "Company", "Society", "Works", "Academy"]
# each region's share of the people (films and organisations follow them); a split's questions are its region's
REGION_SHARES = {"train": 0.6, "dev": 0.2, "test": 0.2}
MIN_PEOPLE = 20


class WorldSizeError(UserError, ValueError):
    """A `--people` the world cannot hold: too few for every region, or more than its names can tell apart."""


def _inventory(rng: random.Random, size: int, syllables: Sequence[int], taken: set[str], suffix: str = "") -> list[str]:
    words: list[str] = []
    while len(words) < size:
        parts = [rng.choice(ONSETS) + rng.choice(VOWELS) for _ in range(rng.choice(syllables))]
        word = ("".join(parts) + rng.choice(CODAS)).capitalize() + suffix
        if word not in taken:
            taken.add(word)
            words.append(word)
    return words


def name_inventories() -> dict[str, list[str]]:
    """The invented words every world builds its names from, the same for every seed: as real names reuse first
    names, surnames and place names, a held-out person is a new combination of words a model has read before."""
    rng, taken = random.Random("kr1 names"), set()
    return {"first": _inventory(rng, 150, [2], taken), "family": _inventory(rng, 150, [2, 3], taken),
            "title": _inventory(rng, 150, [2], taken), "org": _inventory(rng, 100, [2], taken),
            "city": _inventory(rng, 200, [2, 3], taken), "country": _inventory(rng, 40, [2], taken, suffix="ia")}


def name_space() -> dict[str, int]:
    """How many distinct names of each kind the inventories make: people (first x family name), organisations
    (word x kind) and films ("The <noun> of <word>"). A child takes its father's family name; families stay far
    below the 150 first names, so the people's product is not what binds."""
    words = name_inventories()
    return {"person": len(words["first"]) * len(words["family"]),
            "organisation": len(words["org"]) * len(ORG_KINDS), "film": len(TITLE_NOUNS) * len(words["title"])}


def region_sizes(people: int) -> dict[str, int]:
    """The people of each region of a world of `people` people."""
    return {region: max(10, round(people * share)) for region, share in REGION_SHARES.items()}


def region_counts(people: int) -> dict[str, int]:
    """The named entities of a region of `people` people: the people, their organisations (studios) and films."""
    return {"person": people, "organisation": max(6, people // 5), "film": max(10, people // 2)}


def entity_counts(people: int) -> dict[str, int]:
    """The names a world of `people` people takes from the inventories, by kind (summed over its regions)."""
    regions = [region_counts(n) for n in region_sizes(people).values()]
    return {kind: sum(r[kind] for r in regions) for kind in regions[0]}


def _names_taken(beside: int) -> dict[str, int]:
    """The names of each kind a world of `beside` people already took (0: none)."""
    return entity_counts(beside) if beside else dict.fromkeys(name_space(), 0)


def max_people(beside: int = 0) -> int:
    """The largest world whose names fit the inventories, beside a world of `beside` people whose names it
    avoids (`--avoid`; 0: alone). Entity counts grow with `people`, so a bisection finds it."""
    space, taken = name_space(), _names_taken(beside)

    def fits(people: int) -> bool:
        return all(n + taken[kind] <= space[kind] for kind, n in entity_counts(people).items())

    low, high = MIN_PEOPLE - 1, space["person"]  # fits(low) is taken as true: a smaller world is refused anyway
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if fits(mid) else (low, mid - 1)
    return low


MAX_PEOPLE = max_people()  # the largest synthetic world (python -m pipelines.wiki_like_corpus goes further)


def check_size(people: int, avoid: Path | None = None) -> None:
    """Refuse a world the inventories cannot name, in one line that states the limit; `avoid`: the world
    it is built beside (its manifest's people take names from the same inventories)."""
    if people < MIN_PEOPLE:
        raise WorldSizeError(f"--people must be at least {MIN_PEOPLE}, got {people}")
    manifest = avoid / "manifest.json" if avoid is not None else None
    beside = json.loads(manifest.read_text())["people"] if manifest is not None and manifest.is_file() else 0
    limit = max_people(beside)
    if people > limit:
        space, need, taken = name_space(), entity_counts(people), _names_taken(beside)
        # the kind of name that runs out first: the one a world of limit + 1 people has too few of
        kind = next(k for k, n in entity_counts(limit + 1).items() if n + taken[k] > space[k])
        where = f" beside {avoid}, a world of {beside:,} people" if beside else ""
        used = f", {taken[kind]:,} of them used by that world," if beside else ""
        room = f"a synthetic world holds at most {limit:,} people" if limit >= MIN_PEOPLE else "no synthetic world fits"
        raise WorldSizeError(
            f"--people {people}: {room}{where}: its name inventories make "
            f"{space[kind]:,} {kind} names{used} and {people:,} people need {need[kind]:,} (a larger corpus: "
            f"python -m pipelines.wiki_like_corpus)")


class NameMaker:
    """Invented, pronounceable, globally unique entity names, combined from the shared inventories; `avoid`
    holds names another world already gave its entities (a decoy or practice world of the same words)."""

    def __init__(self, rng: random.Random, avoid: set[str] | None = None) -> None:
        self.rng = rng
        self.words = name_inventories()
        self.used: set[str] = set(avoid or ())

    def pick(self, kind: str) -> str:
        return self.rng.choice(self.words[kind])

    def unique(self, make: Any) -> str:
        for _ in range(10_000):
            name = make()
            if name not in self.used:
                self.used.add(name)
                return name
        raise RuntimeError("name space exhausted; use fewer entities")
