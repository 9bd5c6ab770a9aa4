"""`kr1.eval` end to end on the synthetic world: the table and the trajectories file."""

from __future__ import annotations

import json

import pytest

from kr1.eval import main


def test_eval_prints_the_table_and_writes_trajectories_and_the_closed_book_row(ray_session, tmp_path,
                                                                              tiny_model, capsys):
    """`--index-decoy`: the same questions again, every search answered from another seed's world (the
    closed-book row): its passages are none of this world's, so no supporting passage is ever read."""
    from kr1.data import load_corpus

    out = tmp_path / "trajectories.jsonl"
    main(["--config", "default", "--limit", "12", "--out", str(out), "--index-decoy",
          f"data.cache_dir={tmp_path / 'cache'}", "data.synthetic_people=40", "retriever.num_shards=2",
          "retriever.num_cpus_per_shard=0.5", f"model.path={tiny_model}", "data.split=dev"])
    printed = capsys.readouterr()
    header, rule, row, decoy_row, *per_type = printed.out.strip().splitlines()
    columns = header.split("|")[2:-1]
    assert columns[:8] == [" EM ", " F1 ", " turns ", " searches ", " resp. tokens ", " invalid % ", " answered % ",
                           " evidence % "]
    types = [r.split("|")[1].strip() for r in per_type[2:]]  # the types among the 12 questions, one row each
    assert len(columns[8:]) == len(types) and all(c.startswith(" EM ") for c in columns[8:])
    assert decoy_row.startswith("| tiny (decoy index) |")
    values = [float(v) for v in row.split("|")[2:-1]]
    assert 0 <= values[0] <= values[1] <= 100 and values[2] >= 1 and values[4] > 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 12
    assert {"question", "golden_answers", "answer", "em", "f1", "queries", "retrieved_ids", "response"} <= set(rows[0])
    assert sum(r["em"] for r in rows) / 12 * 100 == pytest.approx(values[0])
    [world] = [d for d in (tmp_path / "cache").glob("world*-seed0-people40") if "-beside-" not in d.name]
    [other] = [d for d in (tmp_path / "cache").glob("world*-seed1000-people40-beside-*")
               if (d / "corpus.jsonl").is_file()]  # the world, not its index
    decoy = [json.loads(line) for line in (tmp_path / "trajectories_decoy.jsonl").read_text().splitlines()]
    read = {t for r in decoy for titles in r["retrieved_titles"] for t in titles}
    assert read and read <= {p.title for p in load_corpus(other / "corpus.jsonl")}
    # the other world names none of this world's people, films or organisations (places are shared values)
    entities = {p.title for p in load_corpus(world / "corpus.jsonl")
                if not p.text.startswith((f"{p.title} is a city", f"{p.title} is a country"))}
    assert entities and not entities & {p.title for p in load_corpus(other / "corpus.jsonl")}
    assert float(decoy_row.split("|")[9]) == 0.0  # evidence %: nothing this world's questions need
    assert per_type[0].startswith("| type | n | EM | closed-book EM | guessing floor |")
    assert types == sorted(types) and len(types) >= 2
    assert set(types) <= {"bridge_comparison", "comparison", "compositional", "inference"}
    assert all(r.split("|")[5].strip() == ("50" if "comparison" in r else "-") for r in per_type[2:])
    assert "trajectories in" in printed.err


def test_eval_rejects_a_missing_model_in_one_line(ray_session, tmp_path):
    from kr1.config import ConfigError

    with pytest.raises((FileNotFoundError, ConfigError), match="does not exist"):
        main(["--limit", "2", f"data.cache_dir={tmp_path}", "data.synthetic_people=40",
              f"model.path={tmp_path / 'no_model'}", "retriever.num_cpus_per_shard=0.5"])


def test_two_models_on_the_seven_benchmarks_side_by_side(ray_session, world_dir, index_factory, tiny_model,
                                                         untrained_model, tmp_path, capsys):
    from kr1.benchmarks import prepare_benchmarks
    from kr1.world.flashrag_files import synthetic_benchmarks

    synthetic_benchmarks(world_dir, tmp_path / "flashrag", per_name=4)
    prepare_benchmarks(tmp_path / "benchmarks", source=str(tmp_path / "flashrag"))
    out = tmp_path / "eval"
    main(["--benchmarks", "all", "--benchmark-dir", str(tmp_path / "benchmarks"), "--limit", "3", "--out", str(out),
          "--models", str(untrained_model), str(tiny_model), "data.name=files", f"model.path={tiny_model}",
          f"retriever.index_dir={index_factory(2)}", "retriever.num_cpus_per_shard=0.5",
          "rollout.max_new_tokens_per_turn=32"])
    printed = capsys.readouterr()
    lines = printed.out.strip().splitlines()
    assert (out / "benchmarks.md").read_text().strip() == printed.out.strip()
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in lines[2:]]
    names = ["nq", "triviaqa", "popqa", "hotpotqa", "2wikimultihopqa", "musique", "bamboogle"]
    models = [f"{untrained_model.parent.name}/tiny", f"{tiny_model.parent.name}/tiny"]  # both directories are "tiny"
    assert [(r[0], r[1]) for r in rows] == [(n, m) for n in names for m in models] + [("average", m) for m in models]
    for name, model, em, f1, cover, *_, n in rows[:-2]:
        trajectories = [json.loads(line) for line in (out / f"eval_{model.replace('/', '_')}_{name}.jsonl").open()]
        assert len(trajectories) == int(n) == 3 and {t["question_id"].split("-")[0] for t in trajectories} == {name}
        assert float(em) == pytest.approx(100 * sum(t["em"] for t in trajectories) / 3, abs=0.01)
        assert float(em) <= float(cover) and float(em) <= float(f1)
    for model, average in zip(models, rows[-2:]):
        ems = [float(r[2]) for r in rows[:-2] if r[1] == model]
        assert float(average[2]) == pytest.approx(sum(ems) / 7, abs=0.01) and average[-1] == "21"
    assert "42 questions in" in printed.err
