"""Bad input through the entry points a user runs: one `error:` line naming the file, row or key, and
nothing half-written (hostile model output: tests/rollout/test_hostile_text.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kr1.run.run_lock import RunLock


def _overrides(world_dir, index, model, out, **extra):
    items = {"data.test_path": world_dir / "test.jsonl", "retriever.num_cpus_per_shard": 0.5,
             "trainer.output_dir": out, "trainer.prompts_per_step": 3, "rollout.n_samples": 3,
             "trainer.total_steps": 1, **extra}
    return [f"{k}={v}" for k, v in items.items()]


def _jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


GOOD_Q = {"id": "q1", "problem": "Who directed The Amber Lantern?", "golden_answers": ["Arlen Voss"]}


def _index_with(tmp: Path, index: Path, edit) -> Path:
    copy = tmp / "index_copy"
    shutil.copytree(index, copy)
    edit(copy)
    return copy


def _set_tokenizer(index: Path) -> None:
    manifest = json.loads((index / "manifest.json").read_text())
    manifest["tokenizer"]["stemmer"] = "klingon"
    (index / "manifest.json").write_text(json.dumps(manifest))


def _swap_in_unstemmed_shard(ctx) -> Path:
    """shard_001 of an index built without the stemmer, inside a stemmed index."""
    from kr1.retrieval.index import TokenizerSpec
    from pipelines.build_index import build_index

    other = ctx.tmp / "unstemmed"
    build_index(ctx.world / "corpus.jsonl", other, 2, spec=TokenizerSpec(stemmer=None), progress=False)

    def swap(copy):
        shutil.rmtree(copy / "shard_001")
        shutil.copytree(other / "shard_001", copy / "shard_001")

    return _index_with(ctx.tmp, ctx.index, swap)


class Ctx:
    def __init__(self, tmp, world, index, model):
        self.tmp, self.world, self.index, self.model = tmp, world, index, model
        self.out = tmp / "run"

    def driver(self, **extra):
        from kr1.driver import main

        items = {"data.name": "2wiki", **{k: v for k, v in zip(
            ("data.train_path", "data.dev_path", "retriever.index_dir", "model.path"),
            (self.world / "train.jsonl", self.world / "dev.jsonl", self.index, self.model))}, **extra}
        return lambda: main(_overrides(self.world, self.index, self.model, self.out, **items))


# (case, how to run it, what the one error line must name, paths that must not exist afterwards)
BAD_INPUTS = {
    "question row not JSON": lambda c: (c.driver(**{"data.train_path": _jsonl(
        c.tmp / "train.jsonl", [GOOD_Q, GOOD_Q | {"id": "q2"}, "{not json"])}),
        ["train.jsonl: row 3: not valid JSON"], ["run"]),
    "question field of the wrong type": lambda c: (c.driver(**{"data.dev_path": _jsonl(
        c.tmp / "dev.jsonl", [GOOD_Q, GOOD_Q | {"id": "q2", "golden_answers": "Arlen Voss"}])}),
        ["dev.jsonl: row 2: field 'golden_answers' must be a list of strings, got str"], ["run"]),
    "question without a problem": lambda c: (c.driver(**{"data.train_path": _jsonl(
        c.tmp / "train.jsonl", [{"id": "q1", "golden_answers": ["a"]}])}),
        ["train.jsonl: row 1: missing field 'problem'"], ["run"]),
    "dataset whose answers are empty": lambda c: (c.driver(**{"data.train_path": _jsonl(
        c.tmp / "train.jsonl", [GOOD_Q, GOOD_Q | {"id": "q2", "golden_answers": ["", "  "]}])}),
        ["train.jsonl: row 2: field 'golden_answers' has no non-empty answer"], ["run"]),
    "missing question file": lambda c: (c.driver(**{"data.dev_path": c.tmp / "nope.jsonl"}),
                                        ["nope.jsonl: question file for split 'dev' not found"], ["run"]),
    "empty corpus": lambda c: (c.driver(**{"retriever.index_dir": c.tmp / "new_index", "retriever.corpus_path":
                                           _jsonl(c.tmp / "corpus.jsonl", [])}),
                               ["corpus.jsonl: corpus is empty"], ["run", "new_index"]),
    "corpus row without text": lambda c: (c.driver(**{"retriever.index_dir": c.tmp / "new_index",
                                                      "retriever.corpus_path": _jsonl(c.tmp / "corpus.jsonl", [
                                                          {"id": "a", "text": "fine"}, {"id": "b", "title": "t"}])}),
                                          ["corpus.jsonl: row 2: missing field 'text' (or 'contents')"],
                                          ["run", "new_index"]),
    "missing index": lambda c: (c.driver(**{"retriever.index_dir": c.tmp / "no_index"}),
                                ["retriever.index_dir", "no_index", "holds no index"], ["run", "no_index"]),
    "index with another shard count": lambda c: (c.driver(**{"retriever.num_shards": 3}),
                                                 ["index has 2 shards but retriever.num_shards=3"], ["run"]),
    "index with unusable tokenizer settings": lambda c: (c.driver(**{"retriever.index_dir": _index_with(
        c.tmp, c.index, _set_tokenizer)}), ["index_copy/manifest.json: tokenizer settings", "klingon"], ["run"]),
    "index with a shard of another tokenizer": lambda c: (c.driver(**{"retriever.index_dir": _swap_in_unstemmed_shard(
        c)}), ["index_copy/shard_001:", "terms, manifest says"], ["run"]),
    "unknown config key": lambda c: (c.driver(**{"trainer.totl_steps": 3}),
                                     ["unknown config key 'trainer.totl_steps'"], ["run"]),
    "config value of the wrong type": lambda c: (c.driver(**{"trainer.total_steps": "many"}),
                                                 ["bad value for 'trainer.total_steps'"], ["run"]),
    "model path that does not exist": lambda c: (c.driver(**{"model.path": c.tmp / "no_model"}),
                                                 ["model.path", "no_model", "does not exist"], ["run"]),
    "a cluster that can never hold the run": lambda c: (c.driver(**{"learner.num_workers": 10}), [
        "the run needs 12.1 CPUs (learner 10,", "the cluster has 8 and no autoscaler", "--num-cpus 13"], ["run"]),
    "prepare_data: bad row": lambda c: (_cli("pipelines.prepare_data", [
        "--out", str(c.tmp / "prepared"), "--train", str(_jsonl(c.tmp / "t.jsonl", [GOOD_Q, "[1, 2]"]))]),
        ["t.jsonl: row 2: expected a JSON object, got list"], ["prepared"]),
    "build_index: bad corpus row": lambda c: (_cli("pipelines.build_index", [
        "--corpus", str(_jsonl(c.tmp / "c.jsonl", [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}])),
        "--out", str(c.tmp / "built"), "--shards", "1"]),
        ["c.jsonl: row 2: field 'id' 'a' is repeated"], ["built"]),
}


def _cli(module: str, argv: list[str]):
    import importlib

    return lambda: importlib.import_module(module).main(argv)


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_stops_with_one_line_naming_it(case, ray_session, world_dir, index_factory, untrained_model, tmp_path,
                                                one_line_error):
    ctx = Ctx(tmp_path, world_dir, index_factory(2), untrained_model)
    entry, names, absent = BAD_INPUTS[case](ctx)
    before = set(tmp_path.iterdir())
    last = one_line_error(entry)
    for name in names:
        assert name in last, (name, last)
    for name in absent:
        assert not (tmp_path / name).exists(), f"{name} was written"
    leftovers = [p.name for p in set(tmp_path.iterdir()) - before]
    assert not leftovers, f"half-written: {leftovers}"


def test_a_second_run_on_a_directory_in_use_stops_naming_the_first(ray_session, world_dir, index_factory,
                                                                  untrained_model, tmp_path, one_line_error):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from kr1.run.run_lock import RunLock; "
                               f"RunLock.acquire({str(out)!r}); print('locked', flush=True); time.sleep(120)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        ctx = Ctx(tmp_path, world_dir, index_factory(2), untrained_model)
        line = one_line_error(ctx.driver())
        assert str(out) in line and f"pid {holder.pid}" in line and "in use by another kr1 run" in line, line
        assert not (out / "config.yaml").exists(), "the second run wrote into the first one's directory"
    finally:
        holder.kill()
        holder.wait()
    RunLock.acquire(out).release()  # a killed holder leaves no stale lock


def test_resume_with_other_training_settings_stops_listing_them(trained_run, trained_run_overrides, tmp_path,
                                                                one_line_error):
    from kr1.driver import main

    run = tmp_path / "run"
    shutil.copytree(trained_run.out, run)
    changed = {"trainer.resume": True, "trainer.total_steps": 5, "learner.lr": 0.002, "rollout.n_samples": 4}
    line = one_line_error(lambda: main(trained_run_overrides(run, **changed)))
    assert "step_000003" in line and "learner.lr 0.001 -> 0.002" in line and "rollout.n_samples 3 -> 4" in line
    assert "trainer.total_steps" not in line and "trainer.resume_allow_changes=true" in line, line
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in trained_run.out.iterdir())
