"""The GPU memory planner: hand-computed arithmetic on a made-up model, the shipped configs, refusals.

Pure Python: no Ray, no GPU, no download.
"""

from __future__ import annotations

import json

import pytest

from kr1.config import load_config
from kr1.training.memory_plan import KNOWN_MODELS, GiB, PlanError, UnknownModelError, check_plan, refuse_if_over

# a made-up model small enough to size by hand
TINY = {"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000, "tie_word_embeddings": False}
# head dim 64/4 = 16, kv dim 2*16 = 32; one block:
#   q 64*64 + 64 bias = 4160, k and v 2*(64*32 + 32) = 4160, o 64*64 = 4096,
#   MLP 3*64*128 = 24576, two RMSNorms 2*64 = 128                        -> 37120
# root: embeddings + untied lm_head 2*1000*64 + final norm 64            -> 128064
# total 2*37120 + 128064                                                 -> 202304
TINY_PARAMS = 202304
TINY_OVERRIDES = ["cluster.gpus_per_node=2", "cluster.colocate=false", "model.dtype=bfloat16", "rollout.backend=vllm",
                  "learner.num_workers=2", "learner.token_budget=256", "learner.gradient_checkpointing=true",
                  "rollout.max_total_tokens=128", "data.max_prompt_tokens=64", "rollout.num_engines=1",
                  "reference.placement=colocate", "trainer.prompts_per_step=4", "rollout.n_samples=2",
                  "cluster.gpu_memory_gb=4"]


@pytest.fixture
def tiny_plan(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    return check_plan(load_config("default", [f"model.path={tmp_path}", *TINY_OVERRIDES]))


def test_tiny_model_sizes_by_hand(tiny_plan):
    assert f"{TINY_PARAMS / 1e9:.2f}e9 params" in tiny_plan.header  # read from the local config.json
    update = tiny_plan.group("learner").phases["update"]
    assert update["learner params"] == 4 * TINY_PARAMS / 2 == 404608  # fp32 shard over 2 workers
    assert update["learner AdamW moments"] == 8 * TINY_PARAMS / 2 == 809216  # two fp32 moments
    # gathered, bf16: 2*(2 roots + 2 blocks) + one block grad in bf16 + fp32 = 2*(256128 + 74240) + 6*37120
    assert update["learner gathered params"] == 660736 + 222720
    # T = max(256, 128) = 256 tokens; one layer per token: 2*(9*64 + 2*32 + 4*128) = 2304 bytes
    # checkpointed: 256 * (2 layers * 64 * 2 bytes of input + one layer 2304) = 256 * 2560
    assert update["learner activations"] == 655360
    assert update["learner logits"] == 256 * 1000 * (2 + 16) == 4_608_000  # bf16 logits + fp32 log-softmax + entropy


def test_tiny_model_without_checkpointing_keeps_every_layer(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    cfg = load_config("default", [f"model.path={tmp_path}", *TINY_OVERRIDES, "learner.gradient_checkpointing=false"])
    assert check_plan(cfg).group("learner").phases["update"]["learner activations"] == 256 * 2 * 2304


def test_tiny_reference_and_engine_by_hand(tiny_plan):
    ref = tiny_plan.group("learner").phases["reference"]
    assert ref["reference params"] == 4 * TINY_PARAMS / 2
    assert ref["reference logits"] == 256 * 1000 * (2 + 4 + 4)  # bf16 logits, fp32 copy, fp32 log-softmax
    engine = tiny_plan.group("engine").phases["rollout"]
    assert engine["engine weights"] == 2 * TINY_PARAMS  # bf16, tensor parallel 1
    # the engine takes 0.5 of 4 GiB: weights, 1 GiB of activations and 1 GiB of context leave no KV cache
    assert engine["engine KV cache"] == 0.0
    # per token K and V: 2 * 2 layers * 2 kv heads * 16 * 2 bytes = 256; a 128-token sequence = 32 KiB
    assert "holds no full 128-token sequence" in tiny_plan.refusal()
    assert "raise rollout.gpu_memory_utilization (0.5)" in tiny_plan.refusal()


def test_tiny_kv_cache_note_counts_sequences(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    cfg = load_config("default", [f"model.path={tmp_path}", *TINY_OVERRIDES, "cluster.gpu_memory_gb=8"])
    plan = check_plan(cfg)
    kv = plan.group("engine").phases["rollout"]["engine KV cache"]
    assert kv == 0.5 * 8 * GiB - 2 * TINY_PARAMS - 2 * GiB
    fits = int(kv // (128 * 256))  # full-length sequences, 32 KiB each
    assert f"hold {fits} full 128-token sequences of the 8 an engine runs at once" in plan.table()  # 4 prompts x 2
    assert plan.refusal() is None


def test_known_models_match_published_sizes():
    assert KNOWN_MODELS["Qwen/Qwen2.5-7B-Instruct"].num_params == 7_615_616_512  # "7.61B"
    assert KNOWN_MODELS["Qwen/Qwen2.5-1.5B-Instruct"].num_params == 1_543_714_304  # "1.54B"
    assert KNOWN_MODELS["Qwen/Qwen2.5-0.5B-Instruct"].num_params == 494_032_768  # "0.49B"
    assert KNOWN_MODELS["Qwen/Qwen2.5-3B-Instruct"].num_params == 3_085_938_688  # "3.09B"


def test_7b_config_fits_80_gib_on_8_gpus():
    cfg = load_config("2wiki_qwen2.5_7b_instruct")
    plan = check_plan(cfg)
    g = plan.group("learner+reference+engine")
    assert g.gpus == 8 and set(g.phases) == {"rollout", "reference", "update"}
    assert {"learner AdamW moments", "learner logits", "learner activations"} <= set(g.phases["update"])
    assert {"engine weights", "engine KV cache"} <= set(g.phases["rollout"])
    assert g.phases["update"]["learner AdamW moments"] == 8 * 7_615_616_512 / 8
    assert g.phases["rollout"]["engine weights"] == 2 * 7_615_616_512 / 2  # bf16 over tensor parallel 2
    assert g.phases["update"]["engine asleep"] == 0.0  # sleep_level 2 frees the weights too
    assert "engine KV cache" not in g.phases["reference"]  # the engines sleep before the reference pass
    phase, peak = g.peak
    assert phase == "rollout" and 50 * GiB < peak < 80 * GiB
    assert plan.refusal() is None
    refuse_if_over(cfg)


def test_search_r1_3b_recipe_trains_on_a_mixture_and_fits_80_gib_on_8_gpus():
    cfg = load_config("nq_hotpotqa_qwen2.5_3b_instruct")
    assert [p.split("/")[-2] for p in cfg.data.train_path] == ["nq", "hotpotqa"]
    assert (cfg.rollout.n_samples, cfg.trainer.prompts_per_step, cfg.learner.lr, cfg.algorithm.kl_coef,
            cfg.retriever.top_k, cfg.trainer.total_steps) == (5, 512, 1e-6, 0.001, 3, 1005)  # Search-R1's recipe
    plan = check_plan(cfg)
    g = plan.group("learner+reference+engine")
    assert g.gpus == 8 and g.peak[1] < 80 * GiB and plan.refusal() is None


def test_15b_config_fits_and_a_doubled_budget_needs_the_chunked_logits():
    plan = check_plan(load_config("2wiki_qwen2.5_1.5b_instruct"))
    assert plan.refusal() is None
    # 32k tokens of fp32 logits and entropy over a 152k vocabulary alone take 83 GiB
    refusal = check_plan(load_config("2wiki_qwen2.5_1.5b_instruct", ["learner.token_budget=32768",
                                                                     "learner.logits_chunk_tokens=0"])).refusal()
    assert "set learner.logits_chunk_tokens (e.g. 2048)" in refusal and "lower learner.token_budget" in refusal
    # in 2048-token chunks (the config's setting) they take 2.9 GiB at any budget
    assert check_plan(load_config("2wiki_qwen2.5_1.5b_instruct", ["learner.token_budget=32768"])).refusal() is None
    assert plan.group("learner+reference+engine").phases["update"]["engine asleep"] == 2 * 1_543_714_304  # level 1


@pytest.mark.parametrize("override, phase, knob", [
    ("learner.gradient_checkpointing=false", "update", "turn on learner.gradient_checkpointing"),
    # one GPU (colocation needs engine GPUs = learner ranks): unsharded AdamW, 56.7 GiB
    ("learner.num_workers=1 rollout.num_engines=1 rollout.tensor_parallel_size=1", "rollout",
     "raise learner.num_workers (1)"),
])
def test_7b_refusal_names_the_knob_of_the_largest_part(override, phase, knob):
    cfg = load_config("2wiki_qwen2.5_7b_instruct", override.split())
    with pytest.raises(PlanError) as e:
        refuse_if_over(cfg)
    message = str(e.value)
    assert "\n" not in message and message.startswith("learner+reference+engine needs ")
    assert f"GiB per GPU > 80 GiB in the {phase} phase" in message
    assert f"): {knob}" in message


def test_cpu_default_never_refuses():
    cfg = load_config("default")
    plan = check_plan(cfg)
    assert plan.groups == [] and plan.refusal() is None
    assert "nothing runs on a GPU" in plan.table()
    refuse_if_over(cfg)


def test_unknown_hub_id_is_a_one_line_error():
    cfg = load_config("2wiki_qwen2.5_7b_instruct", ["model.path=Acme/Unknown-7B"])
    with pytest.raises(UnknownModelError) as e:
        check_plan(cfg)
    message = str(e.value)
    assert "\n" not in message and "model.path 'Acme/Unknown-7B'" in message and "local directory" in message


# What one H100 measured (torch 2.11, FSDP2 over NCCL, one rank, bf16 mixed precision, gradient checkpointing,
# colocated reference, randomly initialised models; issue 14): peak reserved + 1 GiB CUDA context, GiB. The
# allocator column says how PyTorch ran: its default allocator, or with expandable segments.
H100 = [  # model, micro-batch tokens, longest sequence, phase, measured, allocator
    ("Qwen/Qwen2.5-0.5B-Instruct", 8192, 2048, "update", 33.34, "default"),
    ("Qwen/Qwen2.5-0.5B-Instruct", 8192, 2048, "reference", 23.49, "default"),
    ("Qwen/Qwen2.5-1.5B-Instruct", 8192, 2048, "update", 54.82, "default"),
    ("Qwen/Qwen2.5-1.5B-Instruct", 8192, 2048, "reference", 44.50, "default"),
    ("Qwen/Qwen2.5-1.5B-Instruct", 16384, 2048, "update", None, "default"),  # out of memory at 78.4 GiB
    ("7b-width-4-layers", 8192, 4096, "update", 73.39, "default"),
    ("7b-width-4-layers", 8192, 4096, "reference", 54.53, "default"),
]


@pytest.mark.parametrize("model, budget, longest, phase, measured, allocator", H100)
def test_the_plan_holds_what_an_h100_reserved(tmp_path, monkeypatch, model, budget, longest, phase, measured,
                                              allocator):
    """Unchunked logits: at least what the caching allocator reserved, at most 1.2x; the run that ran out
    of memory is refused."""
    if model == "7b-width-4-layers":  # Qwen2.5-7B's width and vocabulary, 4 of its 28 layers
        model = str(tmp_path)
        (tmp_path / "config.json").write_text(json.dumps({
            "model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 4,
            "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064, "tie_word_embeddings": False}))
    if allocator == "default":
        monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:False")
    else:
        monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    cfg = load_config("default", [
        f"model.path={model}", "cluster.gpus_per_node=1", "cluster.colocate=false", "model.dtype=bfloat16",
        "learner.num_workers=1", f"learner.token_budget={budget}", "learner.gradient_checkpointing=true",
        f"rollout.max_total_tokens={longest}", "reference.placement=colocate", "rollout.backend=vllm",
        "learner.logits_chunk_tokens=0"])
    plan = check_plan(cfg)
    total = plan.group("learner").total(phase) / GiB
    if measured is None:
        assert total > 78.4 + 9.27 and "learner" in plan.refusal()  # in use + the allocation that failed
    else:
        assert measured <= total <= 1.2 * measured, (total, measured)


# What one H200 measured in a run's steady state (python -m kr1.bench.gpu, 2026-12-04: torch 2.11, expandable
# segments, after a first update; the README's table): model row, micro-batch tokens, chunk, phase, peak reserved
# + context, GiB
H200 = [("0.5b", 0, "reference", 23.28), ("0.5b", 0, "update", 33.00), ("0.5b", 2048, "reference", 13.33),
        ("0.5b", 2048, "update", 16.24), ("1.5b", 0, "reference", 42.57), ("1.5b", 0, "update", 52.76),
        ("1.5b", 2048, "reference", 33.68), ("1.5b", 2048, "update", 37.05), ("1.5b-16k", 0, "reference", 53.33),
        ("1.5b-16k", 0, "update", 81.80), ("1.5b-16k", 2048, "reference", 34.16),
        ("1.5b-16k", 2048, "update", 38.69), ("7b-width", 0, "reference", 61.59), ("7b-width", 0, "update", 79.65),
        ("7b-width", 2048, "reference", 43.30), ("7b-width", 2048, "update", 57.95)]


@pytest.mark.parametrize("row, chunk, phase, measured", H200)
def test_the_plan_holds_what_an_h200_reserved(tmp_path, monkeypatch, row, chunk, phase, measured):
    """Expandable segments, full and chunked logits: at least what the GPU reserved, at most 1.3x."""
    from kr1.bench.gpu import CASES, case_config, planned

    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    total = planned(case_config(CASES[row], chunk, tmp_path))[phase]
    assert measured <= total <= 1.3 * measured, (total, measured)


def test_chunked_logits_shrink_the_learner_by_the_formula(monkeypatch):
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    phases = {}
    for chunk in (0, 2048):
        cfg = load_config("2wiki_qwen2.5_1.5b_instruct", [f"learner.logits_chunk_tokens={chunk}"])
        phases[chunk] = check_plan(cfg).group("learner+reference+engine").phases
    T, V, cb = 16384, 151936, 2
    assert phases[0]["update"]["learner logits"] == T * V * (cb + 16)
    assert phases[2048]["update"]["learner logits"] == 2048 * V * (2 * cb + 16)
    assert phases[2048]["reference"]["reference logits"] == 2048 * V * (cb + 8)
    note = "\n".join(check_plan(load_config("2wiki_qwen2.5_1.5b_instruct")).notes)
    assert "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True" in note
    assert "weight sync (cuda_ipc): 2.88 GiB per step in bfloat16" in note and "fp32 would be 5.75 GiB" in note


def test_learner_processes_get_expandable_segments_unless_the_user_chose(monkeypatch):
    from kr1.training.memory_plan import learner_actor_env

    gpu = load_config("default", ["cluster.gpus_per_node=1"])
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    assert learner_actor_env(gpu) == {"runtime_env": {"env_vars": {"PYTORCH_CUDA_ALLOC_CONF":
                                                                   "expandable_segments:True"}}}
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:512")
    assert learner_actor_env(gpu)["runtime_env"]["env_vars"]["PYTORCH_CUDA_ALLOC_CONF"] == "max_split_size_mb:512"
    assert "(yours: without expandable segments" in "\n".join(check_plan(load_config(
        "2wiki_qwen2.5_1.5b_instruct")).notes)
    assert learner_actor_env(load_config("default")) == {}  # CPU: nothing to set
