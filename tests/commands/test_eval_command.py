"""`kr1.eval` end to end on the synthetic world: the table and the trajectories file."""

from __future__ import annotations

import json

import pytest

from kr1.eval import main


def test_eval_prints_the_table_and_writes_trajectories(ray_session, tmp_path, untrained_model, capsys):
    out = tmp_path / "trajectories.jsonl"
    main(["--config", "default", "--limit", "12", "--out", str(out), f"data.cache_dir={tmp_path / 'cache'}",
          "data.synthetic_people=40", "retriever.num_shards=2", "retriever.num_cpus_per_shard=0.5",
          f"model.path={untrained_model}", "data.split=dev", "rollout.max_new_tokens_per_turn=32"])
    printed = capsys.readouterr()
    header, rule, row = printed.out.strip().splitlines()
    assert header.split("|")[2:-1] == [" EM ", " F1 ", " turns ", " searches ", " resp. tokens ", " invalid % ",
                                       " answered % ", " EM comp. ", " EM infer. ", " EM compar. ", " EM bridge "]
    values = [float(v) for v in row.split("|")[2:-1]]
    assert 0 <= values[0] <= values[1] <= 100 and values[2] >= 1 and values[4] > 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 12
    assert {"question", "golden_answers", "answer", "em", "f1", "queries", "retrieved_ids", "response"} <= set(rows[0])
    assert sum(r["em"] for r in rows) / 12 * 100 == pytest.approx(values[0])
    assert len(list((tmp_path / "cache").glob("world*-seed0-people40/dev.jsonl"))) == 1
    assert "trajectories in" in printed.err


def test_eval_rejects_a_missing_model_in_one_line(ray_session, tmp_path):
    from kr1.config import ConfigError

    with pytest.raises((FileNotFoundError, ConfigError), match="does not exist"):
        main(["--limit", "2", f"data.cache_dir={tmp_path}", "data.synthetic_people=40",
              f"model.path={tmp_path / 'no_model'}", "retriever.num_cpus_per_shard=0.5"])
