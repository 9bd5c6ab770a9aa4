"""Config: bundled files load, overrides apply, and bad keys or values name the key."""

from __future__ import annotations

import pytest

from kr1.config import CONFIG_DIR, ConfigError, load_config


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
def test_bundled_configs_load(name):
    cfg = load_config(name)
    assert cfg.retriever.top_k > 0


def test_bundled_configs_include_the_promised_ones():
    names = {p.stem for p in CONFIG_DIR.glob("*.yaml")}
    assert {"default", "2wiki_qwen2.5_1.5b_instruct", "2wiki_qwen2.5_7b_instruct"} <= names


def test_overrides_apply_with_types():
    cfg = load_config("default", ["trainer.total_steps=7", "learner.lr=3e-5", "rollout.backend=vllm",
                                  "model.path=/tmp/m", "retriever.num_shards=5", "trainer.resume=true"])
    assert cfg.trainer.total_steps == 7 and isinstance(cfg.trainer.total_steps, int)
    assert cfg.learner.lr == pytest.approx(3e-5)
    assert cfg.rollout.backend == "vllm"
    assert cfg.model.path == "/tmp/m"
    assert cfg.retriever.num_shards == 5
    assert cfg.trainer.resume is True


def test_yaml_values_override_schema_defaults():
    cfg = load_config("2wiki_qwen2.5_7b_instruct")
    assert cfg.model.path == "Qwen/Qwen2.5-7B-Instruct"
    assert cfg.rollout.tensor_parallel_size == 2


def test_unknown_override_key_names_the_key():
    with pytest.raises(ConfigError, match=r"unknown config key 'trainer\.totl_steps'"):
        load_config("default", ["trainer.totl_steps=3"])


def test_unknown_section_names_the_key():
    with pytest.raises(ConfigError, match=r"unknown config key 'optimizer'"):
        load_config("default", ["optimizer.lr=1"])


def test_unknown_key_in_yaml_names_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("retriever:\n  topk: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    assert "bad.yaml" in str(err.value) and "'retriever.topk'" in str(err.value)
    assert "\n" not in str(err.value)


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"bad value for 'trainer\.total_steps'"):
        load_config("default", ["trainer.total_steps=many"])


def test_wrong_type_in_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("learner:\n  lr: fast\n")
    with pytest.raises(ConfigError, match=r"'learner\.lr'"):
        load_config(str(path))


def test_value_outside_choices_names_the_key():
    with pytest.raises(ConfigError, match=r"'rollout\.backend'.*hf, vllm"):
        load_config("default", ["rollout.backend=tgi"])
    with pytest.raises(ConfigError, match=r"'rollout\.mode'.*agent, turn"):
        load_config("default", ["rollout.mode=async"])
    with pytest.raises(ConfigError, match=r"'rollout\.search_flush_ms'.*positive"):
        load_config("default", ["rollout.search_flush_ms=0"])


def test_non_positive_count_is_rejected():
    with pytest.raises(ConfigError, match=r"'retriever\.num_shards'"):
        load_config("default", ["retriever.num_shards=0"])


def test_step_advantage_weight_is_a_finite_weight_of_zero_or_more():
    assert load_config("default", ["algorithm.step_advantage_weight=1"]).algorithm.step_advantage_weight == 1.0
    for bad in ("-0.5", "inf", "nan"):
        with pytest.raises(ConfigError, match=r"'algorithm\.step_advantage_weight'.*0 or more, finite"):
            load_config("default", [f"algorithm.step_advantage_weight={bad}"])


def test_override_without_equals_sign():
    with pytest.raises(ConfigError, match="not key=value"):
        load_config("default", ["trainer.total_steps"])


def test_missing_config_name_lists_bundled():
    with pytest.raises(ConfigError, match="default"):
        load_config("no_such_config")


def test_async_mode_keys_are_checked_and_refuse_colocated_engines():
    cfg = load_config("default", ["trainer.mode=async", "algorithm.max_staleness=2", "algorithm.behaviour_clip=3"])
    assert (cfg.trainer.mode, cfg.algorithm.max_staleness, cfg.algorithm.behaviour_clip) == ("async", 2, 3.0)
    with pytest.raises(ConfigError, match=r"'trainer\.mode'.*sync, async"):
        load_config("default", ["trainer.mode=overlap"])
    with pytest.raises(ConfigError, match=r"'algorithm\.max_staleness'.*0 or more"):
        load_config("default", ["trainer.mode=async", "algorithm.max_staleness=-1"])
    with pytest.raises(ConfigError, match=r"trainer\.mode=async needs the engines on their own GPUs"):
        load_config("default", ["trainer.mode=async", "cluster.colocate=true"])


# each combination that cannot run, refused at load in one line naming its keys (the run directory is never written)
REFUSED = {
    "cuda_ipc without a GPU": (["rollout.backend=vllm", "learner.weight_sync=cuda_ipc"],
                               ["learner.weight_sync=cuda_ipc", "cluster.gpus_per_node", "object_store"]),
    "nccl without a GPU": (["rollout.backend=vllm", "learner.weight_sync=nccl"],
                           ["learner.weight_sync=nccl", "cluster.gpus_per_node", "object_store"]),
    "cuda_ipc between separate pools": (["rollout.backend=vllm", "learner.weight_sync=cuda_ipc",
                                         "cluster.gpus_per_node=2"],
                                        ["learner.weight_sync=cuda_ipc", "cluster.colocate=true",
                                         "learner.weight_sync=nccl"]),
    "nccl between colocated roles": (["rollout.backend=vllm", "learner.weight_sync=nccl", "cluster.gpus_per_node=1",
                                      "cluster.colocate=true", "learner.num_workers=1"],
                                     ["learner.weight_sync=nccl", "cluster.colocate=true",
                                      "set learner.weight_sync=cuda_ipc"]),
    "colocated hf engines": (["cluster.gpus_per_node=1", "cluster.colocate=true", "learner.num_workers=1"],
                             ["cluster.colocate=true", "rollout.backend=vllm", "(it is hf)"]),
    "colocation without a GPU": (["rollout.backend=vllm", "cluster.colocate=true", "learner.num_workers=1"],
                                 ["cluster.colocate=true", "cluster.gpus_per_node is 0"]),
    "colocated counts that differ": (["rollout.backend=vllm", "cluster.gpus_per_node=8", "cluster.colocate=true",
                                      "learner.num_workers=4", "rollout.num_engines=2"],
                                     ["rollout.num_engines x rollout.tensor_parallel_size (2 x 1)",
                                      "learner.num_workers (4)"]),
    "float16 engines": (["model.dtype=float16"], ["model.dtype=float16", "bfloat16"]),
    "tensor parallel hf engines": (["rollout.tensor_parallel_size=2", "cluster.gpus_per_node=2"],
                                   ["rollout.tensor_parallel_size=2", "rollout.backend=vllm"]),
    "no GPU memory for vLLM": (["rollout.gpu_memory_utilization=0"], ["'rollout.gpu_memory_utilization': 0.0"]),
    "more than a GPU's memory": (["rollout.gpu_memory_utilization=1.5"], ["'rollout.gpu_memory_utilization': 1.5"]),
    "prompts that leave no room to generate": (["data.max_prompt_tokens=1024"],
                                               ["data.max_prompt_tokens (1024)", "rollout.max_total_tokens (1024)"]),
    "gloo sync into hf engines": (["learner.weight_sync=gloo"],
                                  ["learner.weight_sync=gloo needs rollout.backend=vllm (it is hf)"]),
    "a negative share of a core per shard": (["retriever.num_cpus_per_shard=-1"],
                                             ["'retriever.num_cpus_per_shard': -1.0"]),
    "an http retriever without its url": (["retriever.backend=http"], ["retriever.backend=http needs retriever.url"]),
    "a url for the in-process pool": (["retriever.url=http://127.0.0.1:8000/retrieve"],
                                      ["retriever.url is set", "retriever.backend is numba", "retriever.backend=http"]),
    "a url that is not http": (["retriever.backend=http", "retriever.url=127.0.0.1:8000"], ["'retriever.url'"]),
    "negative http retries": (["retriever.backend=http", "retriever.url=http://h/retrieve",
                               "retriever.http_retries=-1"], ["'retriever.http_retries': -1"]),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_combinations_that_cannot_run_are_refused_in_one_line(case):
    overrides, named = REFUSED[case]
    with pytest.raises(ConfigError) as err:
        load_config("default", overrides)
    message = str(err.value)
    assert "\n" not in message
    for part in named:
        assert part in message, (part, message)


def test_the_runnable_neighbours_of_the_refusals_load():
    """What the refusals leave: colocated cuda_ipc with matching counts (tensor parallel too), nccl between separate
    GPU pools, gloo into vLLM engines on CPU, bfloat16; a colocated reference needs no count of its own (it lives in
    the learner ranks)."""
    colocated = ["rollout.backend=vllm", "cluster.gpus_per_node=8", "cluster.colocate=true",
                 "learner.weight_sync=cuda_ipc", "model.dtype=bfloat16", "reference.placement=colocate",
                 "reference.num_workers=1"]
    load_config("default", [*colocated, "learner.num_workers=8", "rollout.num_engines=4",
                            "rollout.tensor_parallel_size=2"])
    load_config("default", ["rollout.backend=vllm", "cluster.gpus_per_node=3", "learner.weight_sync=nccl"])
    load_config("default", ["rollout.backend=vllm", "learner.weight_sync=gloo"])
