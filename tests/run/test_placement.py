"""What a run needs from the cluster, and the one line that says when a cluster can never hold it."""

from __future__ import annotations

import pytest

from kr1.config import load_config
from kr1.run.placement import fit_problem, placement_bundles, resource_needs


def test_the_default_run_needs_what_its_actors_reserve():
    needs = resource_needs(load_config("default"))
    assert needs == {"learner": {"CPU": 2, "GPU": 0}, "engine": {"CPU": 1, "GPU": 0},
                     "retriever shards": {"CPU": 1.0, "GPU": 0.0}, "reward scorer": {"CPU": 0.1, "GPU": 0.0}}


def test_a_two_core_ray_start_cannot_hold_the_default_run():
    problem = fit_problem(load_config("default"), {"CPU": 2.0}, None)
    assert problem.startswith("the run needs 4.1 CPUs (learner 2, engine 1, retriever shards 1, reward scorer 0.1) "
                              "but the cluster has 2 and no autoscaler that can add more")
    assert "`ray start --head --num-cpus 8`" in problem and "\n" not in problem
    assert fit_problem(load_config("default"), {"CPU": 8.0}, None) is None


def test_a_cluster_that_can_grow_is_waited_for():
    cfg = load_config("2wiki_qwen2.5_7b_instruct")
    gpus = sum(len(b) for b in placement_bundles(cfg).values())
    assert gpus == 8
    assert "needs 8 GPUs" in fit_problem(cfg, {"CPU": 64.0, "GPU": 4.0}, None)
    assert fit_problem(cfg, {"CPU": 64.0, "GPU": 4.0}, {"CPU": 64, "GPU": 16}) is None
    assert "can grow to 6" in fit_problem(cfg, {"CPU": 64.0, "GPU": 4.0}, {"CPU": 64, "GPU": 6})


@pytest.mark.parametrize("overrides, bundles", [
    ([], {"learner": [{"CPU": 1}] * 2, "engine": [{"CPU": 1}]}),
    (["reference.placement=separate", "reference.num_workers=3"],
     {"learner": [{"CPU": 1}] * 2, "engine": [{"CPU": 1}], "reference": [{"CPU": 1}] * 3}),
    (["cluster.gpus_per_node=4", "rollout.backend=vllm", "rollout.num_engines=2", "rollout.tensor_parallel_size=2"],
     {"learner": [{"GPU": 1, "CPU": 1}] * 2, "engine": [{"GPU": 1, "CPU": 1}] * 4}),
])
def test_bundles_per_layout(overrides, bundles):
    assert placement_bundles(load_config("default", overrides)) == bundles
