"""The bench's build plan fits its generators, and a benchmark that fails leaves the rows measured before it."""

from __future__ import annotations

from pathlib import Path

import pytest

from kr1.bench import suite
from kr1.bench.__main__ import main
from kr1.bench.table import Row, parse_table
from kr1.config import load_config
from kr1.errors import UserError
from kr1.world.names import MIN_PEOPLE, max_people

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.parametrize("size", sorted(suite.SIZES))
def test_every_corpus_the_bench_builds_is_one_its_generator_can_make(size):
    """What `python -m kr1.bench` (and `--only scale`) generates on a clean cache, checked without building it:
    a synthetic world within the people its names hold (beside the world it avoids), wiki-like corpora of any
    size."""
    cfg = load_config("default", list(suite.SIZES[size].config_overrides))
    default = [b for b in suite.BENCHMARKS if b not in suite.ON_REQUEST]
    plan = suite.build_plan(size, default, cfg) + suite.build_plan(size, suite.ON_REQUEST, cfg)
    worlds = [p for p in plan if p.generator == "synthetic_world"]
    assert worlds and {p.generator for p in plan} <= {"synthetic_world", "wiki_like"}
    for p in worlds:
        assert MIN_PEOPLE <= p.size <= max_people(p.beside), p
    assert all(p.size > 0 for p in plan)
    retrieval = [p for p in plan if p.purpose == "the retrieval benchmark's corpus"]
    if suite.SIZES[size].large_corpus:  # the rows' corpus, and the size the README states
        assert [(p.generator, p.size) for p in retrieval] == [("wiki_like", suite.LARGE_PASSAGES)]
        assert f"{suite.LARGE_PASSAGES:,}-passage wiki-like corpus" in README.read_text()
    else:
        assert not retrieval


def test_retrieval_logits_and_scale_build_no_default_world():
    """`--only retrieval logits scale` at full size builds wiki-like corpora only (the default's world, index
    and model are not read)."""
    cfg = load_config("default")
    plan = suite.build_plan("full", ["retrieval", "logits", "scale"], cfg, scale_passages=[5000])
    assert [(p.generator, p.size) for p in plan] == [("wiki_like", suite.LARGE_PASSAGES), ("wiki_like", 5000)]


@pytest.mark.parametrize("error, status", [(RuntimeError("disk full\nsecond line"), 1),
                                           (UserError("scale corpus /x: no space left"), 2)])
def test_a_failing_benchmark_prints_the_rows_measured_before_it(error, status, monkeypatch, tmp_path, capsys):
    def fails(bench):
        raise error

    measured = Row("learner logits", "peak memory", "1 MiB", "2 MiB", 0.5, "<= 0.4x", "no")
    monkeypatch.setattr(suite, "ensure_ray", lambda *args: None)
    monkeypatch.setattr(suite, "PARTS", ((("logits",), lambda bench: [measured]), (("scale",), fails)))
    out = tmp_path / "bench.md"
    with pytest.raises(SystemExit) as stopped:
        main(["--size", "tiny", "--only", "logits", "scale", "--cache-dir", str(tmp_path), "--out", str(out)])
    assert stopped.value.code == status
    printed = capsys.readouterr()
    assert [r["setting"] for r in parse_table(printed.out)] == ["peak memory"]
    assert parse_table(out.read_text()) == parse_table(printed.out)
    last = printed.err.strip().splitlines()[-1]
    assert last.startswith("error: the scale benchmark failed: ") and "1 row(s) measured before it" in last, last
    assert str(error).splitlines()[0] in last and "second line" not in last
    assert ("Traceback" in printed.err) == (status == 1)  # a bug keeps its traceback; a user error is one line


def test_the_driver_row_runs_at_the_tiny_size_without_ray_or_the_default_world(monkeypatch, tmp_path):
    """`--only driver` builds nothing and starts no actor: the row's parts are timed on synthetic episodes, and its
    ratio is the driver's seconds over the named rollout budget."""
    from kr1.bench.driver import ROLLOUT_BUDGET_S

    assert suite.build_plan("tiny", ["driver"], load_config("default")) == []
    monkeypatch.setattr(suite, "ensure_ray", lambda *args: None)
    [row] = suite.run_benchmarks("tiny", ["driver"], cache_dir=tmp_path)
    assert row.benchmark == "driver" and "2,000 questions, 16 prompts x 2 samples" in row.setting
    shown = float(row.kr1.removesuffix(" ms")) / 1000  # to 0.1 ms
    assert row.ratio == pytest.approx(shown / ROLLOUT_BUDGET_S, abs=0.05e-3 / ROLLOUT_BUDGET_S)
    assert row.met in ("yes", "no")
    for part in ("prompt selection", "batch assembly", "advantages", "learner slices", "metrics and log"):
        assert f"{part} " in row.notes
