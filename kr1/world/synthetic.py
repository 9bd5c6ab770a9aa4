"""Generate a fictional knowledge world: a Wikipedia-like corpus and multi-hop questions.

    manifest = generate(Path("~/.cache/kr1/world").expanduser(), seed=0, people=500)
    python -m pipelines.synthetic_world --out ~/.cache/kr1/world --seed 0 [--people 500]   # the same, as a command

Writes `corpus.jsonl` (id, title, text), `train.jsonl`, `dev.jsonl`, `test.jsonl`
(2WikiMultihopQA schema: id, problem, golden_answers, type, supporting_titles),
`single_hop.jsonl` (one-passage questions about training entities, for warm-starting a
model on the tag format), `single_hop_test.jsonl` (the same about test entities) and
`manifest.json`. Every name is invented, so no model can answer without searching; the
same seed always gives the same files. Names combine words of fixed inventories
(`kr1.world.names`), so a world holds at most MAX_PEOPLE (4,007) people; a larger
`--people` is refused up front, in one line.

The world is split by entity, not by question: people, films and organisations belong to
one region (train, dev or test), every relation stays inside its region, and a split's
questions name its region's entities only (no dev or test question names what a training
question or warm-start example does); cities, countries, years and occupations recur.

Multi-hop question types follow 2WikiMultihopQA: compositional (film -> director ->
birthplace), comparison (which of two came first), inference (paternal grandfather,
father-in-law) and bridge comparison (which film's director was born first).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kr1.atomic_write import atomic_directory, write_json, write_jsonl
from kr1.data import Passage, QARecord, load_corpus
from kr1.world.names import ORG_KINDS, REGION_SHARES, TITLE_NOUNS, NameMaker, check_size, region_counts, region_sizes

OCCUPATIONS = ["architect", "painter", "composer", "novelist", "physicist", "sculptor", "engineer",
               "botanist", "poet", "cartographer", "chemist", "photographer"]
GENRES = ["drama", "comedy", "thriller", "western", "musical", "documentary", "adventure", "mystery"]
# dev and test hold at most this many questions of each type, so every type is measured on a similar count
HELD_OUT_PER_TYPE = 60
# bump when the generated files change for the same seed, so caches keyed by it rebuild
WORLD_VERSION = 3


@dataclass
class Person:
    name: str
    birth_year: int
    birthplace: str
    occupation: str
    region: str
    father: str | None = None
    spouse: str | None = None


@dataclass
class Film:
    title: str
    year: int
    director: str
    studio: str
    genre: str
    region: str


@dataclass
class Organisation:
    name: str
    founded: int
    founder: str
    city: str
    region: str


@dataclass
class City:
    name: str
    country: str
    founded: int


@dataclass
class World:
    countries: list[str] = field(default_factory=list)
    cities: dict[str, City] = field(default_factory=dict)
    people: dict[str, Person] = field(default_factory=dict)
    films: dict[str, Film] = field(default_factory=dict)
    organisations: dict[str, Organisation] = field(default_factory=dict)

    def region(self, region: str) -> "World":
        """The entities of one region (every relation stays inside it), with the shared cities and countries."""
        inside = lambda items: {k: v for k, v in items.items() if v.region == region}  # noqa: E731
        return World(self.countries, self.cities, inside(self.people), inside(self.films),
                     inside(self.organisations))


def build_world(seed: int, people: int, avoid: set[str] | None = None) -> World:
    """Entities and their relations, region by region; sizes of the other kinds scale with `people`."""
    rng = random.Random(seed)
    names = NameMaker(rng, avoid)
    world = World()
    # many countries, so that guessing one without reading scores little
    countries = names.words["country"]
    world.countries = rng.sample(countries, min(len(countries), max(8, people // 20)))
    for name in rng.sample(names.words["city"], min(len(names.words["city"]), max(8, people // 5))):
        world.cities[name] = City(name, rng.choice(world.countries), rng.randint(900, 1850))
    for region, size in region_sizes(people).items():
        _populate(world, rng, names, region, size)
    return world


def _populate(world: World, rng: random.Random, names: NameMaker, region: str, people: int) -> None:
    """`people` people of one region, with their families, organisations and films."""
    city_names = list(world.cities)
    counts = region_counts(people)
    members: list[Person] = []
    # parents are created before children so that fathers are always older
    for index in range(people):
        family = None
        father = None
        if members and rng.random() < 0.6:
            candidate = rng.choice(members[-200:])
            if candidate.birth_year < 1975:
                father = candidate.name
                family = candidate.name.split()[-1]
        full = names.unique(lambda: f"{names.pick('first')} {family or names.pick('family')}")
        base_year = world.people[father].birth_year if father else 1840 + (index * 140) // max(1, people)
        year = base_year + (rng.randint(22, 40) if father else rng.randint(0, 10))
        person = Person(full, year, rng.choice(city_names), rng.choice(OCCUPATIONS), region, father)
        world.people[full] = person
        members.append(person)
    singles = list(members)
    rng.shuffle(singles)
    for a, b in zip(singles[0::2], singles[1::2]):
        # spouses come from different families, so a father-in-law is never one's own father
        if rng.random() < 0.5 and a.name.split()[-1] != b.name.split()[-1] and abs(a.birth_year - b.birth_year) < 15:
            a.spouse, b.spouse = b.name, a.name
    person_names = [p.name for p in members]
    studios = []
    for _ in range(counts["organisation"]):
        founder = world.people[rng.choice(person_names)]
        name = names.unique(lambda: f"{names.pick('org')} {rng.choice(ORG_KINDS)}")
        world.organisations[name] = Organisation(name, founder.birth_year + rng.randint(25, 50), founder.name,
                                                 rng.choice(city_names), region)
        studios.append(name)
    directors = rng.sample(person_names, k=max(4, people // 4))
    for _ in range(counts["film"]):
        director = world.people[rng.choice(directors)]
        title = names.unique(lambda: f"The {rng.choice(TITLE_NOUNS)} of {names.pick('title')}")
        world.films[title] = Film(title, director.birth_year + rng.randint(24, 60), director.name,
                                  rng.choice(studios), rng.choice(GENRES), region)


def _pronoun(rng: random.Random) -> str:
    return rng.choice(["He", "She"])


def _article(noun: str) -> str:
    return "an" if noun[0] in "aeiou" else "a"


def write_passages(world: World, rng: random.Random) -> list[Passage]:
    """One short encyclopedia passage per entity, ids in creation order."""
    texts: list[tuple[str, str]] = []
    for country in world.countries:
        cities = sorted(c.name for c in world.cities.values() if c.country == country)[:3]
        listed = ", ".join(cities) if cities else "small villages"
        texts.append((country, f"{country} is a country. Its cities include {listed}."))
    for city in world.cities.values():
        texts.append((city.name, f"{city.name} is a city in {city.country}. It was founded in {city.founded}."))
    for person in world.people.values():
        she = _pronoun(rng)
        parts = [f"{person.name} (born {person.birth_year}) is {_article(person.occupation)} {person.occupation}.",
                 f"{person.name} was born in {person.birthplace}."]
        if person.father:
            parts.append(f"{she} is the child of {person.father}.")
        if person.spouse:
            parts.append(f"{she} married {person.spouse}.")
        texts.append((person.name, " ".join(parts)))
    for org in world.organisations.values():
        texts.append((org.name, f"{org.name} is an organisation founded in {org.founded} by {org.founder}. "
                                f"Its headquarters are in {org.city}."))
    for film in world.films.values():
        texts.append((film.title, f"{film.title} is a {film.year} {film.genre} film directed by {film.director}. "
                                  f"It was produced by {film.studio}."))
    return [Passage(str(i), title, text) for i, (title, text) in enumerate(texts)]


def _question(qid: str, problem: str, answer: str, qtype: str, titles: list[str]) -> QARecord:
    return QARecord(qid, problem, [answer], qtype, titles)


def multi_hop_questions(world: World, rng: random.Random, per_type: int) -> list[QARecord]:
    """Questions whose answers need facts from two or more passages."""
    questions: list[QARecord] = []
    films = list(world.films.values())
    people = list(world.people.values())
    orgs = list(world.organisations.values())

    compositional: list[QARecord] = []
    for film in films:
        director = world.people[film.director]
        compositional.append(_question("", f"Where was the director of the film {film.title} born?",
                                       director.birthplace, "compositional", [film.title, director.name]))
        compositional.append(_question("", f"In which year was the director of the film {film.title} born?",
                                       str(director.birth_year), "compositional", [film.title, director.name]))
    for org in orgs:
        founder = world.people[org.founder]
        if org.city == founder.birthplace:  # the organisation's own passage would answer it: not two hops
            continue
        compositional.append(_question("", f"Where was the founder of {org.name} born?", founder.birthplace,
                                       "compositional", [org.name, founder.name]))
    for person in people:
        city = world.cities[person.birthplace]
        compositional.append(_question("", f"In which country was {person.name} born?", city.country,
                                       "compositional", [person.name, city.name]))

    inference: list[QARecord] = []
    for person in people:
        if person.father and world.people[person.father].father:
            father = world.people[person.father]
            inference.append(_question("", f"Who is the paternal grandfather of {person.name}?", father.father,
                                       "inference", [person.name, father.name]))
        if person.spouse and world.people[person.spouse].father:
            spouse = world.people[person.spouse]
            inference.append(_question("", f"Who is the father-in-law of {person.name}?", spouse.father,
                                       "inference", [person.name, spouse.name]))

    comparison: list[QARecord] = []
    bridge: list[QARecord] = []
    for _ in range(per_type * 3):
        a, b = rng.sample(films, 2)
        if a.year != b.year and len(comparison) < per_type:
            first = a if a.year < b.year else b
            comparison.append(_question("", f"Which film came out first, {a.title} or {b.title}?", first.title,
                                        "comparison", [a.title, b.title]))
        p, q = rng.sample(people, 2)
        if p.birth_year != q.birth_year and len(comparison) < per_type:
            older = p if p.birth_year < q.birth_year else q
            comparison.append(_question("", f"Who was born first, {p.name} or {q.name}?", older.name,
                                        "comparison", [p.name, q.name]))
        da, db = world.people[a.director], world.people[b.director]
        if da.name != db.name and da.birth_year != db.birth_year and len(bridge) < per_type:
            earlier = rng.random() < 0.5
            pick = a if (da.birth_year < db.birth_year) == earlier else b
            word = "earlier" if earlier else "later"
            bridge.append(_question("", f"Which film has the director who was born {word}, {a.title} or {b.title}?",
                                    pick.title, "bridge_comparison", [a.title, b.title, da.name, db.name]))

    seen: set[str] = set()
    for group in (compositional, inference, comparison, bridge):
        rng.shuffle(group)
        unique = [q for q in group if not (q.problem in seen or seen.add(q.problem))]
        questions.extend(unique[:per_type])
    return questions


# single-hop phrasings, several per fact, with the entity in different places of the sentence
SINGLE_HOP_TEMPLATES = {
    "birthplace": ["Where was {e} born?", "{e} was born in which city?", "What is the birthplace of {e}?"],
    "birth_year": ["In which year was {e} born?", "When was {e} born?", "{e} was born in which year?"],
    "father": ["Who is the father of {e}?", "{e} is the child of whom?"],
    "spouse": ["Who did {e} marry?", "Who is the spouse of {e}?"],
    "director": ["Who directed the film {e}?", "The film {e} was directed by whom?", "Who is the director of {e}?"],
    "film_year": ["In which year did {e} come out?", "When did the film {e} come out?", "{e} came out in which year?"],
    "founder": ["Who founded {e}?", "{e} was founded by whom?"],
    "film_by": ["Which film did {e} direct in {year}?", "In {year}, which film was directed by {e}?"],
    "country": ["In which country is {e}?", "{e} is a city in which country?"],
}


def single_hop_questions(world: World, rng: random.Random, prefix: str = "single",
                         with_cities: bool = True) -> list[QARecord]:
    """One-passage questions about the world's people, films and organisations (and, `with_cities`, the cities'
    countries): the warm-start curriculum of the training region, never used for the RL task."""
    facts: list[tuple] = []  # (relation, entity, answer[, year])
    for p in world.people.values():
        facts += [("birthplace", p.name, p.birthplace), ("birth_year", p.name, str(p.birth_year))]
        facts += [("father", p.name, p.father)] if p.father else []
        facts += [("spouse", p.name, p.spouse)] if p.spouse else []
    for f in world.films.values():
        facts += [("director", f.title, f.director), ("film_year", f.title, str(f.year))]
    # questions answered by a title: the film a director made in a given year, where that is unique
    made = [(f.director, f.year) for f in world.films.values()]
    facts += [("film_by", f.director, f.title, f.year) for f in world.films.values()
              if made.count((f.director, f.year)) == 1]
    facts += [("founder", o.name, o.founder) for o in world.organisations.values()]
    facts += [("country", c.name, c.country) for c in world.cities.values()] if with_cities else []
    rows = []
    for i, (relation, entity, answer, *year) in enumerate(facts):
        problem = rng.choice(SINGLE_HOP_TEMPLATES[relation]).format(e=entity, year=year[0] if year else "")
        # the entity searched, then the passage that states the fact (the film's own for "film_by")
        rows.append(_question(f"{prefix}-{i}", problem, answer, "single_hop", [entity, answer] if year else [entity]))
    return rows


def region_questions(world: World, rng: random.Random) -> dict[str, list[QARecord]]:
    """Each region's multi-hop questions, shuffled, as its split (dev and test: at most HELD_OUT_PER_TYPE of a
    type); ids name their split."""
    splits = {}
    for region in REGION_SHARES:
        part = world.region(region)
        per_type = len(part.people) if region == "train" else min(len(part.people), HELD_OUT_PER_TYPE)
        rows = multi_hop_questions(part, rng, per_type)
        rng.shuffle(rows)
        for i, row in enumerate(rows):
            row.id = f"{region}-{i}"
        splits[region] = rows
    return splits


def generate(out: Path, seed: int = 0, people: int = 500, avoid: Path | None = None) -> dict[str, Any]:
    """Write the world's files into `out` atomically; returns the manifest. `avoid`: another world's directory,
    none of whose people, films or organisations this world may name (a decoy or practice world)."""
    check_size(people, avoid)
    taken = {p.title for p in load_corpus(avoid / "corpus.jsonl")} if avoid is not None else None
    world = build_world(seed, people, taken)
    rng = random.Random(seed + 1)
    passages = write_passages(world, rng)
    splits = region_questions(world, rng)
    manifest = {"seed": seed, "people": people, "passages": len(passages),
                **{f"{split}_questions": len(rows) for split, rows in splits.items()},
                **{f"{region}_people": len(world.region(region).people) for region in REGION_SHARES}}
    with atomic_directory(out) as tmp:
        write_jsonl(tmp / "corpus.jsonl", (p.to_row() for p in passages))
        for split, rows in splits.items():
            write_jsonl(tmp / f"{split}.jsonl", (r.to_row() for r in rows))
        single = single_hop_questions(world.region("train"), rng)
        manifest["single_hop_questions"] = write_jsonl(tmp / "single_hop.jsonl", (r.to_row() for r in single))
        # the same kinds of questions about test-region entities, for measuring single-hop QA on held-out entities
        held_out = single_hop_questions(world.region("test"), rng, prefix="single-test", with_cities=False)
        manifest["single_hop_test_questions"] = write_jsonl(tmp / "single_hop_test.jsonl",
                                                            (r.to_row() for r in held_out))
        write_json(tmp / "manifest.json", manifest)
    return manifest
