"""Checks of a loaded config: every value within its choices or range, and no combination that cannot run.

    problem = config_problem(cfg)     # None, or one line naming the key(s) and the fix

`kr1.config.load_config` raises the problem as a `ConfigError`, so a config that cannot run stops
at load, before anything is written, not in a traceback from inside an actor after the run
directory exists. The combinations: weight-sync transports and where they work, colocation
(vLLM's sleep and wake, one learner rank per engine GPU), the model dtype the learner computes
in, and prompt lengths that leave nothing to generate.
"""

from __future__ import annotations

import math
from typing import Any

from kr1.rollout.rewards import RewardError, resolve_reward

# values outside these sets are rejected at load time, not deep inside a run
CHOICES: dict[str, tuple[Any, ...]] = {
    "data.name": ("synthetic", "files", "2wiki"),
    "data.split": ("train", "dev", "test"),
    "retriever.backend": ("numba", "numpy", "http"),
    "model.dtype": ("float32", "bfloat16"),
    "model.bootstrap_size": ("tiny", "small"),
    "rollout.backend": ("hf", "vllm"),
    "rollout.mode": ("agent", "turn"),
    "trainer.mode": ("sync", "async"),
    "rollout.prompt_template": ("search_r1", "compact"),
    "rollout.sleep_level": (0, 1, 2),
    "algorithm.advantage": ("grpo", "reinforce_pp"),
    "algorithm.kl_estimator": ("k1", "k3"),
    "algorithm.loss_agg": ("token_mean", "seq_mean"),
    "learner.lr_schedule": ("constant", "cosine"),
    "learner.weight_sync": ("object_store", "cuda_ipc", "nccl", "gloo"),
    "reference.placement": ("separate", "colocate", "none"),
    "cluster.placement_strategy": ("PACK", "SPREAD", "STRICT_PACK"),
}
POSITIVE = (
    "retriever.num_shards", "retriever.top_k", "retriever.max_query_chars", "rollout.num_engines",
    "rollout.n_samples", "rollout.temperature", "rollout.max_turns", "rollout.max_new_tokens_per_turn",
    "rollout.max_total_tokens", "rollout.tensor_parallel_size", "learner.num_workers",
    "learner.token_budget", "learner.mini_batches", "reference.num_workers", "learner.sync_bucket_mb",
    "algorithm.max_sampling_rounds", "rollout.search_batch_size", "rollout.search_flush_ms",
    "trainer.prompts_per_step", "data.synthetic_people", "data.max_prompt_tokens", "algorithm.behaviour_clip",
    "cluster.placement_timeout_s", "trainer.keep_checkpoints", "retriever.http_max_concurrency", "trainer.probe_every",
    "retriever.http_timeout_s",
)


def config_problem(cfg: Any) -> str | None:
    """The first problem of `cfg` (a kr1.config.Config), as one line, or None."""
    return (_value_problem(cfg) or _retriever_problem(cfg.retriever) or _reward_problem(cfg.reward)
            or _run_problem(cfg) or _placement_problem(cfg) or _length_problem(cfg))


def _value_problem(cfg: Any) -> str | None:
    train = cfg.data.train_path
    if train is not None and not isinstance(train, str) and not (
            isinstance(train, list) and train and all(isinstance(p, str) and p for p in train)):
        return f"bad value for 'data.train_path': {train!r} (a file, or a non-empty list of files)"
    if cfg.model.dtype == "float16":  # before the choices: say why it is not one
        return ("model.dtype=float16: the learner computes in bfloat16 (FSDP2 mixed precision), so float16 engines "
                "would sample from another distribution than the learner scores: set model.dtype=bfloat16")
    for key, allowed in CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value not in allowed:
            return f"bad value for '{key}': {value!r} (choose from {', '.join(map(str, allowed))})"
    for key in POSITIVE:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value <= 0:
            return f"bad value for '{key}': {value!r} (must be positive)"
    if not 0 <= cfg.learner.lr_warmup_ratio < 1:
        return (f"bad value for 'learner.lr_warmup_ratio': {cfg.learner.lr_warmup_ratio!r} "
                "(a share of trainer.total_steps in [0, 1))")
    if not 0 <= cfg.learner.lr_min_ratio <= 1:
        return f"bad value for 'learner.lr_min_ratio': {cfg.learner.lr_min_ratio!r} (in [0, 1])"
    if not 0 <= cfg.algorithm.step_advantage_weight < float("inf"):
        return (f"bad value for 'algorithm.step_advantage_weight': {cfg.algorithm.step_advantage_weight!r} "
                "(0 or more, finite)")
    if cfg.algorithm.max_staleness < 0:
        return f"bad value for 'algorithm.max_staleness': {cfg.algorithm.max_staleness!r} (0 or more)"
    if cfg.trainer.probe_prompts < 0:
        return f"bad value for 'trainer.probe_prompts': {cfg.trainer.probe_prompts!r} (0 or more)"
    if not 0 < cfg.rollout.top_p <= 1:
        return f"bad value for 'rollout.top_p': {cfg.rollout.top_p!r} (a probability mass in (0, 1])"
    if not 0 < cfg.rollout.gpu_memory_utilization <= 1:
        return (f"bad value for 'rollout.gpu_memory_utilization': {cfg.rollout.gpu_memory_utilization!r} "
                "(a share of one GPU's memory in (0, 1])")
    if cfg.retriever.num_cpus_per_shard < 0:  # Ray refuses the actor only once the run has started
        return (f"bad value for 'retriever.num_cpus_per_shard': {cfg.retriever.num_cpus_per_shard!r} "
                "(0 or more)")
    return None


def _retriever_problem(r: Any) -> str | None:
    """retriever.url goes with backend=http, and only with it."""
    if r.backend == "http":
        if not r.url:
            return ("retriever.backend=http needs retriever.url, the server's endpoint "
                    "(e.g. retriever.url=http://127.0.0.1:8000/retrieve)")
        if not r.url.startswith(("http://", "https://")):
            return f"bad value for 'retriever.url': {r.url!r} (an http:// or https:// endpoint)"
    elif r.url:
        return (f"retriever.url is set and retriever.backend is {r.backend} (the in-process pool): set "
                "retriever.backend=http to search the server, or unset retriever.url")
    if r.http_retries < 0:
        return f"bad value for 'retriever.http_retries': {r.http_retries!r} (0 or more)"
    return None


def _reward_problem(r: Any) -> str | None:
    """One way to set the weights, finite weights, something paid, and every named reward importable (a user's
    function is imported here, in the driver, so its ImportError is one line before the run starts)."""
    legacy = r.legacy_weights()
    if r.weights is not None and legacy:
        return (f"reward.weights and reward.{next(iter(legacy))}_weight both set the rewards: put every weight in "
                f"reward.weights (e.g. reward.weights={{{', '.join(f'{k}: {v}' for k, v in legacy.items())}}})")
    weights = r.effective_weights()
    for name, weight in weights.items():
        if not math.isfinite(weight):
            return f"bad value for 'reward.weights.{name}': {weight!r} (a finite number)"
    if not any(weights.values()):
        return "reward.weights pays nothing (every weight is 0 or none is given): give at least one reward a weight"
    try:
        for name in weights:
            resolve_reward(name)
    except RewardError as e:
        return str(e)
    return None


def _run_problem(cfg: Any) -> str | None:
    if cfg.learner.weight_sync != "object_store" and cfg.rollout.backend != "vllm":  # vLLM's transfer engines
        return (f"learner.weight_sync={cfg.learner.weight_sync} needs rollout.backend=vllm (it is "
                f"{cfg.rollout.backend}): set learner.weight_sync=object_store")
    if cfg.trainer.resume and cfg.trainer.overwrite:  # resume continues the run that overwrite would move aside
        return "trainer.resume=true and trainer.overwrite=true contradict: choose one"
    if cfg.trainer.mode == "async" and cfg.cluster.colocate:  # colocated engines sleep while the learner trains
        return "trainer.mode=async needs the engines on their own GPUs: set cluster.colocate=false"
    return None


def _placement_problem(cfg: Any) -> str | None:
    """Weight sync, colocation and devices."""
    sync, gpus, colocate, r = cfg.learner.weight_sync, cfg.cluster.gpus_per_node, cfg.cluster.colocate, cfg.rollout
    if sync in ("cuda_ipc", "nccl") and gpus == 0:
        return (f"learner.weight_sync={sync} is a CUDA transport and cluster.gpus_per_node is 0: set "
                "learner.weight_sync=object_store")
    if sync == "cuda_ipc" and not colocate:  # a CUDA IPC handle maps only on the GPU that made it
        return ("learner.weight_sync=cuda_ipc needs cluster.colocate=true (IPC handles map only on the GPU a learner "
                "rank shares with its engine): set cluster.colocate=true, or learner.weight_sync=nccl for engines "
                "on GPUs of their own")
    if sync == "nccl" and colocate:
        return ("learner.weight_sync=nccl with cluster.colocate=true: NCCL cannot put a learner rank and a vLLM "
                "worker on one GPU: set learner.weight_sync=cuda_ipc")
    if colocate and r.backend != "vllm":
        return (f"cluster.colocate=true needs rollout.backend=vllm (it is {r.backend}): sleep and wake, which free "
                "the engines' GPU memory for the update, are vLLM's: set rollout.backend=vllm or "
                "cluster.colocate=false")
    if colocate and gpus == 0:
        return "cluster.colocate=true shares GPUs and cluster.gpus_per_node is 0: set cluster.colocate=false"
    if colocate and r.num_engines * r.tensor_parallel_size != cfg.learner.num_workers:  # kr1/run/placement.py
        return (f"cluster.colocate=true puts one learner rank on each engine GPU: rollout.num_engines x "
                f"rollout.tensor_parallel_size ({r.num_engines} x {r.tensor_parallel_size}) must equal "
                f"learner.num_workers ({cfg.learner.num_workers}): change one side")
    if r.tensor_parallel_size > 1 and r.backend != "vllm":
        return (f"rollout.tensor_parallel_size={r.tensor_parallel_size} needs rollout.backend=vllm (an {r.backend} "
                "engine runs on one device): set rollout.tensor_parallel_size=1")
    return None


def _length_problem(cfg: Any) -> str | None:
    if cfg.data.max_prompt_tokens >= cfg.rollout.max_total_tokens:  # the prompt would leave no token to generate
        return (f"data.max_prompt_tokens ({cfg.data.max_prompt_tokens}) must be below rollout.max_total_tokens "
                f"({cfg.rollout.max_total_tokens}), which holds the prompt and all that follows it: lower "
                "data.max_prompt_tokens or raise rollout.max_total_tokens")
    return None
