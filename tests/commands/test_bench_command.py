"""`python -m kr1.bench --size tiny` end to end: every benchmark runs and the table holds every row."""

from __future__ import annotations

import math

import pytest

from kr1.bench.__main__ import main
from kr1.bench.table import parse_table

ROWS_PER_BENCHMARK = {"rollout batching": 1, "agent loop": 2, "retrieval": 5, "learner memory": 4, "learner logits": 4,
                      "weight sync": 2, "step breakdown": 8, "overlap": 2, "async": 2, "driver": 1}


def test_tiny_bench_prints_every_row_with_a_numeric_ratio(ray_session, world_dir, index_factory, tiny_model,
                                                         tmp_path):
    out = tmp_path / "bench.md"
    rows = main(["--size", "tiny", "--world", str(world_dir), "--index", str(index_factory(2)),
                 "--model", str(tiny_model), "--corpus", str(world_dir / "corpus.jsonl"),
                 "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    table = parse_table(out.read_text())
    assert len(table) == len(rows)
    counts = {name: sum(r["benchmark"] == name for r in table) for name in ROWS_PER_BENCHMARK}
    assert counts == ROWS_PER_BENCHMARK
    for r in table:
        ratio = float(r["ratio"])
        assert math.isfinite(ratio) and ratio >= 0, r
        assert r["met"] in ("yes", "no", "-"), r
    by_setting = {r["setting"]: r for r in table}
    for shards in ("1 shard", "2 shards", "4 shards"):
        pool = by_setting[f"pool, {shards} vs bm25s in-process"]
        assert "top-k equal to the 1-shard index: yes" in pool["notes"]
    assert "same passages: yes" in by_setting["pool served over HTTP (kr1.serve) vs in-process, 8 clients"]["notes"]
    assert by_setting["weight sync (object store)"]["met"] in ("yes", "no")
    assert float(by_setting["retrieval, inside the rollout"]["ratio"]) > 0  # Episode.search_seconds was timed
    assert all(float(r["ratio"]) > 0 for r in table if r["benchmark"] == "learner memory")
    assert by_setting["retrieval ‖ generation inside the rollout"]["kr1"] == "not overlapped"  # the default: turn
    # both loops ran on the engine (hf at this size; vllm's async engine: tests/rollout/test_agent_loop.py)
    assert float(by_setting["agent vs turn loop, hf, default (2 prompts x 2)"]["ratio"]) > 0
    assert float(by_setting["agent loop vs plain batched generation, hf"]["ratio"]) > 0


def test_the_scale_bench_builds_wiki_like_corpora_and_plans_wiki18(ray_session, world_dir, index_factory,
                                                                    tiny_model, tmp_path):
    """`--only scale` at two tiny sizes: build time and memory per size, the growth, bm25s's build beside ours,
    the pool on 1, 2 and 4 shards with the single index's top-3, and the projection to wiki-18."""
    rows = main(["--size", "tiny", "--only", "scale", "--world", str(world_dir), "--index", str(index_factory(2)),
                 "--model", str(tiny_model), "--cache-dir", str(tmp_path / "cache")])
    settings = [r.setting for r in rows]
    assert settings[:4] == ["build, 5,000 passages, 2 shards", "build peak memory, 5,000 passages",
                            "build, 10,000 passages, 2 shards", "build peak memory, 10,000 passages"]
    assert "build peak memory growth, 5,000 -> 10,000 passages" in settings
    assert "build throughput, 5,000 passages" in settings
    pools = [r for r in rows if r.setting.startswith("pool, ")]
    assert len(pools) == 3 and all("top-3 equal to the 1-shard index: yes" in r.notes for r in pools)
    assert rows[-1].setting.startswith("projection to wiki-18") and "head node" in rows[-1].notes
    assert all(math.isfinite(r.ratio) and r.ratio > 0 for r in rows)
    assert all(r.met == "yes" for r in rows if r.setting.startswith("build peak memory,"))  # far below 4 GiB


def test_the_gpu_check_prints_the_plan_anywhere_and_measures_only_on_cuda(capsys, monkeypatch):
    from kr1.bench.gpu import main as gpu_main
    from kr1.errors import run_cli

    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)  # the learner's default: expandable segments
    gpu_main(["--plan-only", "--rows", "0.5b", "--chunk", "0", "2048"])
    lines = capsys.readouterr().out.splitlines()
    rows = {tuple(c.strip() for c in line.split("|")[1:5]): line.split("|")[5].strip() for line in lines
            if line.startswith("| 0.5b")}
    assert rows[("0.5b", "8192", "0", "update")] == "41.08"  # the plan beside the H200's 33.00 (README)
    assert float(rows[("0.5b", "8192", "2048", "update")]) < 0.6 * 41.08  # the logits term in chunks
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(SystemExit) as stopped:
            run_cli(lambda: gpu_main([]))
        assert stopped.value.code == 2 and "measures a CUDA GPU" in capsys.readouterr().err
    gpu_main(["--checks-only", "--device", "cpu"])  # the checks' maths over gloo, where no GPU is
    checks = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")][1:]  # no header
    assert [c.split("|")[1].strip() for c in checks] == ["fsdp2_gloo", "chunked_logits", "gradient_checkpointing",
                                                           "cpu_offload", "mini_batches"]
    assert all(c.rstrip().endswith("| pass |") for c in checks), checks
