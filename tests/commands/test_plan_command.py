"""`python -m kr1.plan` and the driver's memory gate: one line naming the knob, nothing started or written."""

from __future__ import annotations

import pytest

from kr1.driver import main as driver_main
from kr1.errors import run_cli
from kr1.plan import main as plan_main


def test_cli_exits_1_with_one_line_when_over(capsys):
    with pytest.raises(SystemExit) as e:
        plan_main(["--config", "2wiki_qwen2.5_7b_instruct", "learner.num_workers=1", "rollout.num_engines=1",
                   "rollout.tensor_parallel_size=1"])  # one GPU: the whole 7B learner and its AdamW state
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: learner+reference+engine needs ")
    plan_main(["--config", "2wiki_qwen2.5_7b_instruct"])  # fits: returns, exit status 0
    assert "peak" in capsys.readouterr().out


def test_driver_refuses_a_run_over_memory_before_starting_anything(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        run_cli(lambda: driver_main(["--config", "2wiki_qwen2.5_7b_instruct", "learner.gradient_checkpointing=false",
              f"trainer.output_dir={tmp_path / 'run'}"]))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: learner+reference+engine needs ") and "gradient_checkpointing" in err
    assert "cluster.memory_plan=false" in err and not (tmp_path / "run").exists()


def test_an_async_plan_holds_learner_and_engine_gpus_apart_and_says_both_peak_at_once(capsys):
    plan_main(["--config", "2wiki_qwen2.5_7b_instruct", "trainer.mode=async", "cluster.colocate=false",
               "learner.weight_sync=object_store", "learner.num_workers=4", "rollout.num_engines=2"])
    out = capsys.readouterr().out
    assert "learner: 4 GPU(s)" in out and "engine: 4 GPU(s)" in out
    assert "trainer.mode=async: the learner's 4 GPUs and the engines' 4 hold their peaks at once" in out
    assert "GPUs: learner 4 + engine 4 = 8" in out
