"""Bad input through the entry points a user runs: one `error:` line naming the file, row or key, and
nothing half-written (hostile model output: tests/rollout/test_hostile_text.py)."""

from __future__ import annotations

import gzip
import json
import re
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
    from kr1.run.index_build import build_index

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
    "build_index: corpus row that is not UTF-8": lambda c: (_build(c, _bytes(
        c.tmp / "c.jsonl", b'{"id": "a", "text": "x"}\n{"id": "b", "text": "caf\xe9"}\n'), 1),
        ["c.jsonl: row 2: not valid UTF-8 (invalid continuation byte at byte 25 of the line)"], ["built"]),
    "build_index: corpus row with half a surrogate pair": lambda c: (_build(c, _bytes(
        c.tmp / "c.jsonl", b'{"id": "a", "text": "x"}\n{"id": "b", "text": "y \\ud83d"}\n'), 1),
        ["c.jsonl: row 2: holds the lone surrogate '\\ud83d', which UTF-8 cannot store"], ["built"]),
    "build_index: gzip corpus cut short": lambda c: (_build(c, _bytes(c.tmp / "c.jsonl.gz", gzip.compress(
        (c.world / "corpus.jsonl").read_bytes())[:2000]), 1),
        ["c.jsonl.gz: not a readable gzip file (Compressed file ended before the end-of-stream marker was reached)"],
        ["built"]),
    "build_index: more shards than lines": lambda c: (_build(c, _jsonl(c.tmp / "c.jsonl", [
        {"id": "a", "text": "x"}, {"id": "b", "text": "y"}]), 3),
        ["c.jsonl: 3 shards, but its lines split into only 2 chunks", "use fewer shards (at most 2)"], ["built"]),
    "build_index: memory budget no node has": lambda c: (_build(c, c.world / "corpus.jsonl", 1, "10T"), [
        "--memory-budget 10240.00 GiB is more than any Ray node offers"], ["built"]),
    "search: truncated array in the index": lambda c: (_cli("kr1.search", [
        "--index", str(_index_with(c.tmp, c.index, _truncate_data)), "who directed"]),
        ["index_copy/shard_001/data.csc.index.npy: unreadable (mmap length is greater than file size); the index "
         "is damaged, rebuild it"], []),
    "index with a truncated array": lambda c: (c.driver(**{"retriever.index_dir": _index_with(
        c.tmp, c.index, _truncate_data)}), ["index_copy/shard_001/data.csc.index.npy: unreadable"], ["run"]),
    "model directory that holds no model": lambda c: (c.driver(**{"model.path": _model_dir(c.tmp / "m", {
        "weights.bin": "not a model"})}), ["model.path", "/m holds no config.json: not a Hugging Face model "
                                                           "directory"], ["run"]),
    "model directory without a tokenizer": lambda c: (c.driver(**{"model.path": _model_dir(c.tmp / "m", {
        "config.json": (c.model / "config.json").read_text()})}),
        ["model.path", "/m: holds no tokenizer (no tokenizer.json or vocabulary files)"], ["run"]),
    "mistyped hub id with the hub offline": lambda c: (c.driver(**{"model.path": "Qwen/Qwen2.5-0.5B-Instrct"}), [
        "model.path Qwen/Qwen2.5-0.5B-Instrct is not in the local hub cache (", "and the hub is offline "
        "(HF_HUB_OFFLINE=1): download it first (hf download Qwen/Qwen2.5-0.5B-Instrct) or give a directory"], ["run"]),
    "question file that is not UTF-8": lambda c: (c.driver(**{"data.dev_path": _bytes(
        c.tmp / "dev.jsonl", json.dumps(GOOD_Q).encode() + b"\n\xff\n")}),
        ["dev.jsonl: row 2: not valid UTF-8 (invalid start byte at byte 1 of the line)"], ["run"]),
}


def _bytes(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def _build(c, corpus: Path, shards: int, budget: str = "2G"):
    return _cli("pipelines.build_index", ["--corpus", str(corpus), "--out", str(c.tmp / "built"), "--shards",
                                          str(shards), "--memory-budget", budget])


def _truncate_data(index: Path) -> None:
    array = index / "shard_001" / "data.csc.index.npy"
    array.write_bytes(array.read_bytes()[:len(array.read_bytes()) // 2])


def _model_dir(path: Path, files: dict[str, str]) -> Path:
    path.mkdir()
    for name, text in files.items():
        (path / name).write_text(text)
    return path


def _cli(module: str, argv: list[str]):
    import importlib

    return lambda: importlib.import_module(module).main(argv)


# progress, not part of the error: a tqdm frame (`build_index:  50%|█████ | 2/4 ...`), a `building ...` note
PROGRESS = re.compile(r"^([\w .-]*:\s*\d+%\||building )")


@pytest.fixture
def only_error_line(capsys):
    """Run a command's main as `python -m` would (`run_cli`): it must exit 2, and stderr must hold one line (progress
    aside), `error: ...`, returned."""
    from kr1.errors import run_cli

    def stopped(entry) -> str:
        capsys.readouterr()
        with pytest.raises(SystemExit) as stopped_with:
            run_cli(entry)
        assert stopped_with.value.code == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and not PROGRESS.match(line)]
        assert len(err) == 1 and err[0].startswith("error: "), err[-5:]
        return err[0]

    return stopped


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_stops_with_one_line_naming_it(case, ray_session, world_dir, index_factory, untrained_model, tmp_path,
                                                only_error_line):
    ctx = Ctx(tmp_path, world_dir, index_factory(2), untrained_model)
    entry, names, absent = BAD_INPUTS[case](ctx)
    before = set(tmp_path.iterdir())
    last = only_error_line(entry)
    for name in names:
        assert name in last, (name, last)
    for name in absent:
        assert not (tmp_path / name).exists(), f"{name} was written"
    leftovers = [p.name for p in set(tmp_path.iterdir()) - before]
    assert not leftovers, f"half-written: {leftovers}"


def _driver(tmp: Path, *overrides: str):
    from kr1.driver import main

    return lambda: main([*overrides, f"trainer.output_dir={tmp / 'run'}"])


# bad input found before Ray starts or anything is read at length: (case, how to run it, what the line must name,
# paths that must not exist afterwards)
EARLY_BAD_INPUTS = {
    "build_index: no shards": lambda t: (_cli("pipelines.build_index", [
        "--corpus", str(_jsonl(t / "c.jsonl", [{"id": "a", "text": "x"}])), "--out", str(t / "built"), "--shards",
        "0"]), ["number of shards must be at least 1, got 0"], ["built"]),
    "build_index: a .gz corpus that is not gzip": lambda t: (_cli("pipelines.build_index", [
        "--corpus", str(_bytes(t / "c.jsonl.gz", b'{"id": "a", "text": "x"}\n')), "--out", str(t / "built")]),
        ["c.jsonl.gz: not a gzip file, though its name ends in .gz"], ["built"]),
    "weight sync over CUDA IPC with the hf backend": lambda t: (_driver(t, "learner.weight_sync=cuda_ipc"), [
        "learner.weight_sync=cuda_ipc needs rollout.backend=vllm (it is hf): set learner.weight_sync=object_store"],
        ["run"]),
    "weight sync over NCCL with the hf backend": lambda t: (_driver(
        t, "learner.weight_sync=nccl", "rollout.backend=hf"), ["learner.weight_sync=nccl needs rollout.backend=vllm"],
        ["run"]),
    "top_p above 1": lambda t: (_driver(t, "rollout.top_p=1.5"),
                                ["bad value for 'rollout.top_p': 1.5 (a probability mass in (0, 1])"], ["run"]),
    "top_p of 0": lambda t: (_driver(t, "rollout.top_p=0"), ["bad value for 'rollout.top_p': 0.0"], ["run"]),
    "negative top_p": lambda t: (_driver(t, "rollout.top_p=-0.5"), ["bad value for 'rollout.top_p': -0.5"], ["run"]),
    "config file that holds a YAML list": lambda t: (_driver(t, "--config", str(_bytes(t / "c.yaml", b"- 1\n"))),
                                                     ["c.yaml: holds a list, not a mapping of config sections"],
                                                     ["run"]),
    "prepare_data: question file that is not UTF-8": lambda t: (_cli("pipelines.prepare_data", [
        "--out", str(t / "prepared"), "--train", str(_bytes(t / "t.jsonl", json.dumps(GOOD_Q).encode()
                                                             + b'\n{"id": "q2", "problem": "\xc3("}\n'))]),
        ["t.jsonl: row 2: not valid UTF-8 (invalid continuation byte at byte 26 of the line)"], ["prepared"]),
    "prepare_data: a .gz question file that is not gzip": lambda t: (_cli("pipelines.prepare_data", [
        "--out", str(t / "prepared"), "--train", str(_bytes(t / "t.jsonl.gz", json.dumps(GOOD_Q).encode()))]),
        ["t.jsonl.gz: not a readable gzip file (Not a gzipped file"], ["prepared"]),
    "plot_run: a directory that holds no run": lambda t: (_cli("pipelines.plot_run", [
        "--run", str(t), "--out", str(t / "plot.png")]), [f"{t}: no tensorboard directory"], ["plot.png"]),
    "bootstrap_model: a fraction outside [0, 1)": lambda t: (_cli("pipelines.bootstrap_model", [
        "--world", str(t), "--out", str(t / "model"), "--multihop-fraction", "1.5"]),
        ["--multihop-fraction must be in [0, 1), got 1.5"], ["model"]),
}


@pytest.mark.parametrize("case", list(EARLY_BAD_INPUTS))
def test_bad_input_found_early_stops_with_one_line_naming_it(case, tmp_path, only_error_line):
    entry, names, absent = EARLY_BAD_INPUTS[case](tmp_path)
    before = set(tmp_path.iterdir())
    line = only_error_line(entry)
    for name in names:
        assert name in line, (name, line)
    assert not [p.name for p in set(tmp_path.iterdir()) - before], "half-written"
    assert not any((tmp_path / name).exists() for name in absent)


def test_a_hub_id_is_checked_in_the_local_hub_cache(untrained_model, tmp_path, monkeypatch):
    """A hub id resolves from the hub's cache layout (models--owner--name/snapshots/<commit>, refs/main) with the
    hub offline; a snapshot without a tokenizer is refused in one line naming the id."""
    from huggingface_hub import constants

    from kr1.config import ConfigError
    from kr1.run.assets import resolve_model_path

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    for repo, files in (("acme--tiny", ("config.json", "tokenizer.json", "tokenizer_config.json")),
                        ("acme--untokenized", ("config.json",))):
        snapshot = tmp_path / "hub" / f"models--{repo}" / "snapshots" / "0123abcd"
        snapshot.mkdir(parents=True)
        (snapshot.parents[1] / "refs").mkdir()
        (snapshot.parents[1] / "refs" / "main").write_text("0123abcd")
        for name in files:
            shutil.copy(untrained_model / name, snapshot / name)
    assert resolve_model_path("acme/tiny") == "acme/tiny"
    with pytest.raises(ConfigError) as refused:
        resolve_model_path("acme/untokenized")
    assert str(refused.value) == \
        "model.path acme/untokenized: holds no tokenizer (no tokenizer.json or vocabulary files)"
    with pytest.raises(ConfigError, match=r"^--models acme/tiny2 is not in the local hub cache \(.*/hub\)"):
        resolve_model_path("acme/tiny2", key="--models")


def test_an_internal_bug_keeps_its_traceback(tmp_path):
    """Only a UserError becomes the one line: a FileNotFoundError from kr1's own code (or any other exception) is a
    bug, and its traceback is what finds it."""
    for bug in ("open('/nonexistent-kr1-internal/state.json')", "raise RuntimeError('an internal bug')"):
        done = subprocess.run([sys.executable, "-c", f"from kr1.errors import run_cli\ndef main():\n    {bug}\n"
                                                     "run_cli(main)"], capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode == 1 and done.stderr.startswith("Traceback (most recent call last):"), done.stderr
        assert done.stderr.strip().splitlines()[-1].startswith(("FileNotFoundError: [Errno 2]", "RuntimeError: an"))
    done = subprocess.run([sys.executable, "-c", "from kr1.errors import UserError, run_cli\ndef main():\n"
                                                 "    raise UserError('x.jsonl: row 3: bad')\nrun_cli(main)"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert (done.returncode, done.stderr) == (2, "error: x.jsonl: row 3: bad\n")


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
