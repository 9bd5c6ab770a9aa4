"""The GPU memory plan: peak bytes of every role on one GPU for a config, and the refusal of one that cannot fit.

    plan = check_plan(cfg); print(plan.table()); refuse_if_over(cfg)   # raises PlanError
    python -m kr1.plan --config 2wiki_qwen2.5_7b_instruct             # the same as a command (kr1/plan.py)

Sizes come from `model.path`/config.json for a local directory, else KNOWN_MODELS (no download).
Bytes on ONE GPU, shown in GiB against `cluster.gpu_memory_gb` (an "80 GB" H100 holds 80 GiB).
P params, N learner.num_workers, cb compute bytes (2 bf16/fp16, 4 float32), T micro-batch tokens =
max(learner.token_budget, rollout.max_total_tokens), h hidden, kv kv-heads x head-dim, I intermediate.

- learner (FSDP2) loads fp32 weights; with a bf16/fp16 model.dtype, MixedPrecision keeps fp32 shards and
  computes in bf16. Shards: params 4P/N, grads 4P/N (kept between steps: zero_grad runs at the next
  step's start), AdamW's two fp32 moments 8P/N; on the host with learner.cpu_offload. Gathered: the root
  unit (embeddings, lm_head) stays unsharded through forward and backward, with its gradient; two blocks
  (running + prefetched); one block's gradient cast to fp32 for the reduce-scatter.
- activations, cb*(9h + 2kv + 4I) bytes per token per layer: two RMSNorms' fp32 and cb copies (6h), q
  and the attention output (4h), k and v (4kv), SwiGLU gate, SiLU, up and product (8I); flash/SDPA keeps
  no T x T scores. Gradient checkpointing keeps each layer's input (cb*h) plus one layer recomputed.
- logits, T*V*(cb + 16) bytes: the logits, the fp32 log-softmax kept for backward, and the entropy that
  train_step always computes (fp32 log-softmax, exp, product): the usual OOM at a 152k vocabulary.
  A no-grad forward holds cb + 8 (logits, fp32 copy, log-softmax). With learner.logits_chunk_tokens = C
  (kr1.training.chunked_logprobs) only C positions' logits live at once: C*V*(2cb + 16) in the update
  (a chunk recomputed in backward with its gradients), C*V*(cb + 8) in a no-grad forward.
- allocator reserve: with PyTorch's default caching allocator, blocks freed by the T x V (or C x V)
  tensors stay reserved and are reused badly: 1.4 x (L*V*4) in the update and 0.75 x in a no-grad
  forward, L = T or C, fitted to what an H100 reserved beyond what it allocated (README, GPU memory
  plan). With expandable_segments:True, which the learner and reference processes get unless
  PYTORCH_CUDA_ALLOC_CONF is set (then that stands, and the plan says so), the reserve is 1.6 x (L*V*4)
  + 0.65 x the fp32 parameter shard in the update and 0.2 x + 0.8 x in a no-grad forward, fitted to what
  an H200 reserved in a run's steady state (after a first update: gradients and AdamW's moments exist).
- reference `colocate`: a second FSDP2 model in each learner (fp32 shards) whose forward runs after the
  engines are put to sleep; `separate`: a full model.dtype copy per GPU.
- engine (vLLM, tensor_parallel_size GPUs) preallocates gpu_memory_utilization of the GPU: weights
  cb*P/tp, ~1 GiB profiled activations, its context, the rest KV cache; reported beside the KV cache
  that all its concurrent sequences need at full length.
- cluster.colocate: GPU i holds learner rank i, its reference and an engine shard; phases rollout,
  reference, update (engines asleep in the last two: sleep_level 1 keeps their weights, 2 only their
  context). The learner frees its cached blocks after each update (torch.cuda.empty_cache).
Each process adds ~1 GiB (CUDA context, NCCL). Weight sync needs less than rollout. These are estimates.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass, field

from kr1.config import Config, expand_path
from kr1.errors import UserError

GiB = 2**30
# what PyTorch's default caching allocator keeps reserved beside the live tensors, per fp32 L x V block
RESERVE = {"update": 1.4, "reference": 0.75}
# with expandable segments, what stays mapped beside the live tensors: shares of the fp32 L x V block and of
# the fp32 parameter shard (the optimizer step's and the gradient reduce-scatter's buffers), fitted to one
# H200's steady-state table (python -m kr1.bench.gpu, README: measured within 0.85-1.07 of the plan without it)
RESERVE_EXPANDABLE = {"update": (1.6, 0.65), "reference": (0.2, 0.8)}
EXPANDABLE = "expandable_segments:True"
CONTEXT = 1.0 * GiB  # per process: CUDA context, NCCL and cuBLAS workspaces (and vLLM's CUDA graphs)
ENGINE_ACTIVATIONS = 1.0 * GiB  # vLLM's profiled forward peak, taken from its budget before the KV cache


class PlanError(UserError, ValueError):
    """A plan that does not fit, or a model whose size is unknown (one-line message)."""


class UnknownModelError(PlanError):
    """model.path is neither a local directory with config.json nor a hub id in KNOWN_MODELS."""


@dataclass(frozen=True)
class ModelDims:
    """The Hugging Face config.json fields that size a Qwen2/Llama-style decoder."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    tie_word_embeddings: bool
    head_dim: int = 0  # 0: hidden_size // num_attention_heads
    qkv_bias: bool = True  # Qwen2 has q/k/v biases, Llama not

    @property
    def head_size(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def kv_dim(self) -> int:
        return self.num_key_value_heads * self.head_size

    @property
    def block_params(self) -> int:  # q, k, v, o projections, the SwiGLU MLP, two RMSNorm weights
        h, q, kv = self.hidden_size, self.num_attention_heads * self.head_size, self.kv_dim
        attention = 2 * h * q + 2 * h * kv + (q + 2 * kv) * self.qkv_bias
        return attention + 3 * h * self.intermediate_size + 2 * h

    @property
    def root_params(self) -> int:  # FSDP2's root unit: embeddings, final norm, lm_head unless tied
        return self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2) + self.hidden_size

    @property
    def num_params(self) -> int:
        return self.num_hidden_layers * self.block_params + self.root_params


# published config.json values, so hub ids plan without a download
KNOWN_MODELS: dict[str, ModelDims] = {
    "Qwen/Qwen2.5-0.5B-Instruct": ModelDims(896, 4864, 24, 14, 2, 151936, True),
    "Qwen/Qwen2.5-1.5B-Instruct": ModelDims(1536, 8960, 28, 12, 2, 151936, True),
    "Qwen/Qwen2.5-3B-Instruct": ModelDims(2048, 11008, 36, 16, 2, 151936, True),
    "Qwen/Qwen2.5-7B-Instruct": ModelDims(3584, 18944, 28, 28, 4, 152064, False),
}


def model_dims(cfg: Config) -> ModelDims:
    """Read `model.path`/config.json when it is a local directory, else look the hub id up; never download."""
    path = cfg.model.path
    config_json = expand_path(path) / "config.json" if path else None
    if config_json is not None and config_json.is_file():
        try:
            raw = json.loads(config_json.read_text())
            return ModelDims(raw["hidden_size"], raw["intermediate_size"], raw["num_hidden_layers"],
                             raw["num_attention_heads"], raw.get("num_key_value_heads", raw["num_attention_heads"]),
                             raw["vocab_size"], bool(raw.get("tie_word_embeddings", False)), raw.get("head_dim") or 0,
                             bool(raw.get("attention_bias", raw.get("model_type", "qwen2") == "qwen2")))
        except (KeyError, ValueError) as e:
            raise UnknownModelError(f"{config_json}: cannot read model sizes ({e})") from None
    if path in KNOWN_MODELS:
        return KNOWN_MODELS[path]
    raise UnknownModelError(f"model.path {path!r} has no local config.json and is not a hub id the planner knows "
                            f"({', '.join(KNOWN_MODELS)}): pass a local directory holding the model's config.json")


@dataclass
class GpuGroup:
    """Identical GPUs holding the same roles: bytes on one GPU per component, for each phase."""

    name: str
    gpus: int
    phases: dict[str, dict[str, float]] = field(default_factory=dict)

    def total(self, phase: str) -> float:
        return sum(self.phases[phase].values())

    @property
    def peak(self) -> tuple[str, float]:
        phase = max(self.phases, key=self.total)
        return phase, self.total(phase)


@dataclass
class MemoryPlan:
    """Per-GPU estimates of every GPU group, and what to turn when one does not fit."""

    gpu_memory: float  # bytes on one GPU
    groups: list[GpuGroup]
    notes: list[str]
    header: str = ""
    parts: dict[str, tuple[str, list[str]]] = field(default_factory=dict)  # component -> (label, knobs)
    problems: list[str] = field(default_factory=list)  # refusals that are not about a sum

    def group(self, name: str) -> GpuGroup:
        return next(g for g in self.groups if g.name == name)

    def refusal(self) -> str | None:
        """One line naming the first group over the GPU memory and the knobs of its largest parts, or None."""
        for g in self.groups:
            phase, peak = g.peak
            if peak > self.gpu_memory:
                ranked = sorted(g.phases[phase].items(), key=lambda kv: -kv[1])
                knobs = list(dict.fromkeys(k for c, _ in ranked for k in self.parts.get(c, ("", []))[1]))[:3]
                advice = " or ".join(knobs) if len(knobs) < 3 else f"{knobs[0]}, {knobs[1]}, or {knobs[2]}"
                return (f"{g.name} needs {peak / GiB:.1f} GiB per GPU > {self.gpu_memory / GiB:g} GiB in the "
                        f"{phase} phase (largest: {ranked[0][0]} {ranked[0][1] / GiB:.1f} GiB): "
                        f"{advice or 'use GPUs with more memory'}")
        return self.problems[0] if self.problems else None

    def table(self) -> str:
        """Components (rows) by phase (columns) for each GPU group, its peak, then the notes."""
        lines = [self.header] if self.header else []
        for g in self.groups:
            phases = list(g.phases)
            names = list(dict.fromkeys(c for p in phases for c in g.phases[p]))
            lines += ["", f"{g.name}: {g.gpus} GPU(s), GiB per GPU".ljust(62) + "".join(f"{p:>11}" for p in phases)]
            for c in names:
                cells = (g.phases[p].get(c) for p in phases)
                lines.append(f"  {self.parts.get(c, (c,))[0]:<60}"
                             + "".join(f"{'-' if v is None else f'{v / GiB:.2f}':>11}" for v in cells))
            lines.append(f"  {'total':<60}" + "".join(f"{g.total(p) / GiB:>11.2f}" for p in phases))
            phase, peak = g.peak
            verdict = "fits" if peak <= self.gpu_memory else "DOES NOT FIT"
            lines.append(f"  peak {peak / GiB:.1f} GiB ({phase} phase) of {self.gpu_memory / GiB:g} GiB: {verdict}")
        return "\n".join(lines + [""] * bool(self.groups) + self.notes)


def allocator_conf() -> tuple[str, bool]:
    """PYTORCH_CUDA_ALLOC_CONF for learner and reference processes (the user's if set, else expandable
    segments), and whether it turns expandable segments on."""
    value = os.environ.get("PYTORCH_CUDA_ALLOC_CONF")
    if value is None:
        return EXPANDABLE, True
    return value, "expandable_segments:true" in value.replace(" ", "").lower()


def learner_actor_env(cfg: Config) -> dict:
    """Ray actor options for learner and reference processes on GPUs: the allocator setting the plan
    assumes (expandable segments unless the user set PYTORCH_CUDA_ALLOC_CONF); nothing on CPU."""
    if cfg.cluster.gpus_per_node == 0:
        return {}
    return {"runtime_env": {"env_vars": {"PYTORCH_CUDA_ALLOC_CONF": allocator_conf()[0]}}}


def _learner(cfg: Config, d: ModelDims, cb: int, T: int, notes: list[str]) -> tuple[dict[str, float], ...]:
    """Bytes on one learner GPU: kept between phases, during the update, during a colocated reference forward."""
    P, n, V = d.num_params, cfg.learner.num_workers, d.vocab_size
    chunk = cfg.learner.logits_chunk_tokens
    L = min(chunk, T) if chunk > 0 else T  # positions whose logits live at once
    expandable = allocator_conf()[1]
    shards = {"learner params": 4 * P / n, "learner grads": 4 * P / n, "learner AdamW moments": 8 * P / n}
    if cfg.reference.placement == "colocate":
        shards["reference params"] = 4 * P / n
    if cfg.learner.cpu_offload:
        notes.append(f"learner.cpu_offload: {sum(shards.values()) / GiB:.2f} GiB of shards per worker in host memory")
    resident = {**({} if cfg.learner.cpu_offload else shards), "learner CUDA context": CONTEXT}
    layer = cb * (9 * d.hidden_size + 2 * d.kv_dim + 4 * d.intermediate_size)  # activation bytes per token
    update = {**resident, "learner gathered params":
              cb * (2 * d.root_params + 2 * d.block_params) + (cb + 4) * d.block_params,
              "learner activations": T * (d.num_hidden_layers * d.hidden_size * cb + layer)
              if cfg.learner.gradient_checkpointing else T * d.num_hidden_layers * layer,
              "learner logits": L * V * (2 * cb + 16) if chunk > 0 else T * V * (cb + 16)}
    ref_forward = {"reference gathered params": cb * (d.root_params + 2 * d.block_params),
                   "reference activations": T * layer, "reference logits": L * V * (cb + 4 + 4 * (cb < 4))}
    if not expandable:
        update["learner allocator reserve"] = RESERVE["update"] * L * V * 4
        ref_forward["reference allocator reserve"] = RESERVE["reference"] * L * V * 4
    else:
        logits_share, params_share = RESERVE_EXPANDABLE["update"]
        update["learner allocator reserve"] = logits_share * L * V * 4 + params_share * 4 * P / n
        logits_share, params_share = RESERVE_EXPANDABLE["reference"]
        ref_forward["reference allocator reserve"] = logits_share * L * V * 4 + params_share * 4 * P / n
    return resident, update, ref_forward


def _engine(cfg: Config, d: ModelDims, cb: int, gpu: float, plan: MemoryPlan) -> dict[str, float]:
    """Bytes on one engine GPU while awake; notes the KV cache a rollout needs beside the one it gets."""
    ro, P = cfg.rollout, d.num_params
    kv_heads = math.ceil(d.num_key_value_heads / ro.tensor_parallel_size)  # replicated when tp > kv heads
    per_seq = ro.max_total_tokens * 2 * d.num_hidden_layers * kv_heads * d.head_size * cb  # K and V, one GPU
    seqs = math.ceil(cfg.trainer.prompts_per_step * ro.n_samples / ro.num_engines)
    if ro.backend != "vllm":  # the HF backend holds full weights and only the cache it fills
        return {"engine weights": cb * P, "engine KV cache": seqs * per_seq, "engine CUDA context": CONTEXT}
    weights = cb * P / ro.tensor_parallel_size
    kv = max(0.0, ro.gpu_memory_utilization * gpu - weights - ENGINE_ACTIVATIONS - CONTEXT)
    fits = int(kv // per_seq)
    plan.notes.append(
        f"engine KV cache: {per_seq / ro.max_total_tokens / 1024:.0f} KiB/token/GPU; its {kv / GiB:.1f} GiB hold "
        f"{fits} full {ro.max_total_tokens}-token sequences of the {seqs} an engine runs at once "
        f"({cfg.trainer.prompts_per_step} prompts x {ro.n_samples} / {ro.num_engines} engines), which at full length "
        f"need {seqs * per_seq / GiB:.1f} GiB/GPU" + ("" if fits >= seqs else "; vLLM queues the rest"))
    if fits < 1:  # vLLM refuses to start when one max_model_len sequence does not fit
        plan.problems.append(
            f"engine KV cache of {kv / GiB:.2f} GiB per GPU holds no full {ro.max_total_tokens}-token sequence "
            f"({per_seq / GiB:.2f} GiB): raise rollout.gpu_memory_utilization ({ro.gpu_memory_utilization:g}) "
            f"or rollout.tensor_parallel_size ({ro.tensor_parallel_size})")
    return {"engine weights": weights, "engine activations": ENGINE_ACTIVATIONS, "engine KV cache": kv,
            "engine CUDA context": CONTEXT}


def _parts(cfg: Config, T: int, V: int) -> dict[str, tuple[str, list[str]]]:
    """Each component's label in the table and the settings that shrink it, largest lever first."""
    lrn, ro, n, tp = cfg.learner, cfg.rollout, cfg.learner.num_workers, cfg.rollout.tensor_parallel_size
    dt = "fp32" if cfg.model.dtype == "float32" else "bf16"
    budget, workers = f"lower learner.token_budget ({lrn.token_budget})", f"raise learner.num_workers ({n})"
    shard = [workers] + ([] if lrn.cpu_offload else ["turn on learner.cpu_offload"])
    ckpt = "checkpointed: layer inputs + 1 layer" if lrn.gradient_checkpointing else "every layer, no checkpointing"
    chunk = min(lrn.logits_chunk_tokens, T)
    rows = f"chunks of {chunk} of {T}" if chunk > 0 else f"{T}"
    logit_knobs = [budget] if chunk > 0 else ["set learner.logits_chunk_tokens (e.g. 2048)", budget]
    reserve = ["set PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True (kr1's default)"] + logit_knobs
    return {
        "learner params": (f"learner params (fp32 shard 1/{n})", shard),
        "learner grads": (f"learner grads (fp32 shard 1/{n})", shard),
        "learner AdamW moments": (f"learner AdamW 2 moments (fp32 shard 1/{n})", shard),
        "learner gathered params": (f"learner gathered: root + 2 blocks ({dt}), 1 block grad", []),
        "learner activations": (f"learner activations ({ckpt})",
                                ([] if lrn.gradient_checkpointing else ["turn on learner.gradient_checkpointing"])
                                + [budget]),
        "learner logits": (f"learner logits ({rows} x {V}: fp32 log-softmax, entropy)", logit_knobs),
        "learner allocator reserve": (f"learner allocator reserve (default allocator, {rows} x {V} blocks)", reserve),
        "reference allocator reserve": (f"reference allocator reserve (default allocator, {rows} x {V})", reserve),
        "reference params": (f"reference params (fp32 shard 1/{n})", [workers, "set reference.placement=separate"]),
        "reference weights": (f"reference weights ({cfg.model.dtype}, full copy)",
                              ["set reference.placement=colocate"]),
        "reference gathered params": (f"reference gathered: root + 2 blocks ({dt})", []),
        "reference activations": ("reference activations (1 layer, no grad)", [budget]),
        "reference logits": (f"reference logits ({rows} x {V}: fp32 log-softmax)", logit_knobs),
        "engine weights": (f"engine weights ({cfg.model.dtype}, 1/{tp} tensor parallel)",
                           [f"raise rollout.tensor_parallel_size ({tp})"]),
        "engine activations": ("engine profiled activations", []),
        "engine KV cache": ("engine KV cache (rest of its budget)" if ro.backend == "vllm" else "engine KV cache",
                            [f"lower rollout.gpu_memory_utilization ({ro.gpu_memory_utilization:g})"]),
        "engine asleep": (f"engine asleep (sleep_level {ro.sleep_level})",
                          [f"raise rollout.sleep_level ({ro.sleep_level})"]),
    }


def check_plan(cfg: Config) -> MemoryPlan:
    """Per-GPU peak memory of every role for `cfg`; a CPU config (gpus_per_node 0) plans nothing."""
    gpu = cfg.cluster.gpu_memory_gb * GiB
    if cfg.cluster.gpus_per_node == 0:
        return MemoryPlan(gpu, [], ["cluster.gpus_per_node is 0: nothing runs on a GPU, nothing to plan"])
    d, ro, n = model_dims(cfg), cfg.rollout, cfg.learner.num_workers
    cb = 4 if cfg.model.dtype == "float32" else 2
    T = max(cfg.learner.token_budget, ro.max_total_tokens)
    plan = MemoryPlan(gpu, [], [], header=(
        f"GPU memory plan: {cfg.model.path} ({d.num_params / 1e9:.2f}e9 params, {d.num_hidden_layers} layers, hidden "
        f"{d.hidden_size}, vocab {d.vocab_size}), {cfg.model.dtype}, micro-batch {T} tokens, "
        f"{cfg.cluster.gpu_memory_gb:g} GiB per GPU"), parts=_parts(cfg, T, d.vocab_size))
    resident, update, ref_forward = _learner(cfg, d, cb, T, plan.notes)
    engine = _engine(cfg, d, cb, gpu, plan)
    ref_colocated, engine_gpus = cfg.reference.placement == "colocate", ro.num_engines * ro.tensor_parallel_size
    if cfg.cluster.colocate:
        g = GpuGroup("learner+reference+engine" if ref_colocated else "learner+engine", n)
        g.phases["rollout"] = {**resident, **engine}
        awake = sum(engine.values()) - CONTEXT
        sleeping = {"engine asleep": {0: awake, 1: engine["engine weights"], 2: 0.0}[ro.sleep_level],
                    "engine CUDA context": CONTEXT}
        if ref_colocated:  # the engines sleep from the reference forward until the weight sync
            g.phases["reference"] = {**resident, **ref_forward, **sleeping}
        g.phases["update"] = {**update, **sleeping}
        plan.groups.append(g)
        if engine_gpus != n:
            plan.notes.append(f"colocation needs rollout.num_engines x tensor_parallel_size ({ro.num_engines} x "
                              f"{ro.tensor_parallel_size}) = learner.num_workers ({n}); kr1/run/placement.py refuses")
    else:
        g = GpuGroup("learner", n, {"reference": {**resident, **ref_forward}} if ref_colocated else {})
        g.phases["update"] = update
        plan.groups += [g, GpuGroup("engine", engine_gpus if ro.backend == "vllm" else ro.num_engines,
                                    {"rollout": engine})]
    if cfg.reference.placement == "separate":
        separate = {"reference weights": cb * d.num_params, "reference CUDA context": CONTEXT,
                    **{k: v for k, v in ref_forward.items() if k != "reference gathered params"}}
        plan.groups.append(GpuGroup("reference", cfg.reference.num_workers, {"reference": separate}))
    conf, expandable = allocator_conf()
    plan.notes.append(f"allocator: PYTORCH_CUDA_ALLOC_CONF={conf} in learner and reference processes"
                      + ("" if expandable else " (yours: without expandable segments the plan adds the reserve "
                                              "the default allocator keeps)"))
    plan.notes.append(sync_note(cfg, d))
    if cfg.trainer.mode == "async":
        plan.notes.append(
            f"trainer.mode=async: the learner's {n} GPUs and the engines' {engine_gpus} hold their peaks at once "
            f"(nothing sleeps); the object store keeps up to {cfg.algorithm.max_staleness + 1} copies of the weights "
            f"({sync_bytes(cfg, d) / GiB:.2f} GiB each) for engines still on older ones")
    plan.notes.append("GPUs: " + " + ".join(f"{g.name} {g.gpus}" for g in plan.groups)
                      + f" = {sum(g.gpus for g in plan.groups)} (cluster.gpus_per_node {cfg.cluster.gpus_per_node})")
    return plan


def sync_bytes(cfg: Config, d: ModelDims) -> float:
    """Bytes one weight sync moves to each engine: every parameter once, in model.dtype."""
    return d.num_params * (4 if cfg.model.dtype == "float32" else 2)


def sync_note(cfg: Config, d: ModelDims) -> str:
    size = sync_bytes(cfg, d) / GiB
    mode = cfg.learner.weight_sync
    how = {"object_store": f"gathered on learner rank 0, put in the object store in buckets of "
                           f"{cfg.learner.sync_bucket_mb} MiB, fetched by each engine",
           "cuda_ipc": "CUDA IPC handles to the gathered tensors, copied device to device",
           "nccl": "broadcast from learner rank 0 over NCCL",
           "gloo": "broadcast from learner rank 0 over gloo, through host memory"}[mode]
    return (f"weight sync ({mode}): {size:.2f} GiB per step in {cfg.model.dtype} ({how}); "
            f"fp32 would be {d.num_params * 4 / GiB:.2f} GiB")


def refuse_if_over(cfg: Config) -> None:
    """Raise PlanError (one line: role, estimate vs GPU memory, knobs) when a role cannot fit."""
    message = check_plan(cfg).refusal()
    if message:
        raise PlanError(message)


def check_memory_plan(cfg: Config) -> None:
    """The driver's gate: refuse a plan over memory; a model the planner cannot size only warns."""
    try:
        refuse_if_over(cfg)
    except UnknownModelError as e:
        print(f"warning: no memory plan ({e})", file=sys.stderr)
    except PlanError as e:
        raise PlanError(f"{e} (kr1.plan's estimate; cluster.memory_plan=false starts anyway)") from None
