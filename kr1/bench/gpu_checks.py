"""The learner's GPU features checked on one CUDA GPU without Ray or vLLM (`python -m kr1.bench.gpu`'s first part).

    rows = run_checks(torch.device("cuda", 0))     # [CheckRow], each with what it measured and pass/fail

Each check builds a randomly initialised Qwen2 of Qwen2.5-0.5B's width and vocabulary (4 layers, so the
152k-token output head dominates as in the recipes), shards it with the learner's own `shard_model` (FSDP2 over
NCCL, bf16 mixed precision, as a learner rank on a GPU), and runs the learner's own `train_step` and
`batch_logprobs` on random token ids. A feature must make the same update as without it (loss, gradient norm,
and the direction of the weight change, under SGD the gradient's) and, where it exists to save memory, a lower peak:

    fsdp2_nccl               FSDP2 bf16 update against the same model unsharded in fp32
    chunked_logits           learner.logits_chunk_tokens=2048 against the full logits
    gradient_checkpointing   learner.gradient_checkpointing against stored activations
    cpu_offload              learner.cpu_offload (parameters and optimizer state in host memory)
    mini_batches             learner.mini_batches=2 (the old log-probs, two AdamW steps) against unsharded fp32

`--device cpu` runs the same checks over gloo without mixed precision (a development aid: the memory columns
are then 0 and only the maths is checked).
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from kr1.config import AlgorithmConfig
from kr1.training.algorithms import loss_normalizer
from kr1.training.batch import TrainBatch
from kr1.training.policy_update import batch_logprobs, train_step
from kr1.training.sharded_model import shard_model
from kr1.training.token_budget import TokenBudgetBatcher

GiB = 1 << 30
WIDTH = {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 4, "num_attention_heads": 14,
         "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True}  # Qwen2.5-0.5B, 4 layers
SMALL = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "vocab_size": 512, "tie_word_embeddings": True}  # --device cpu


@dataclass
class CheckRow:
    name: str
    measured: str  # what it saw, in words and figures
    passed: bool


@dataclass
class Update:
    loss: float
    grad_norm: float
    delta: torch.Tensor  # the change of a sample of weights (fp32, flattened)
    peak_gib: float  # peak GPU memory allocated during the update (0 on CPU)
    resident_gib: float  # GPU memory still allocated after it: weights, gradients, optimizer state (0 on CPU)


def random_batch(rows: int, longest: int, vocab: int, seed: int = 0) -> TrainBatch:
    """Random token ids, lengths from half to full, the last three quarters of each sequence generated."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(longest // 2, longest + 1, rows)
    mask = (np.arange(longest)[None] < lengths[:, None]).astype(np.int8)
    loss = mask * (np.arange(longest)[None] >= lengths[:, None] // 4)
    reference = (rng.normal(-np.log(vocab), 0.5, (rows, longest)) * mask).astype(np.float32)
    return TrainBatch(input_ids=rng.integers(3, vocab, (rows, longest)).astype(np.int64) * mask,
                      attention_mask=mask, loss_mask=loss.astype(np.int8), prompt_lengths=lengths // 4,
                      group_ids=np.arange(rows) // 4, advantages=rng.standard_normal(rows).astype(np.float32),
                      ref_logprobs=reference)


def release_memory(device: torch.device) -> None:
    """Free what earlier models left: FSDP2 modules hold reference cycles (hooks), which only the collector frees."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _model(dims: dict[str, Any], device: torch.device, checkpointing: bool, seed: int) -> Any:
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)  # every variant starts from the same weights
    config = AutoConfig.for_model("qwen2", **dims)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    if checkpointing:
        model.gradient_checkpointing_enable()
    return model


def _sampled_weights(model: Any) -> torch.Tensor:
    """A fixed sample of the weights (the first layer's attention and MLP, the norm), gathered, fp32, on CPU."""
    out = []
    for name, p in model.named_parameters():
        if ".layers.0." in name or name.endswith("model.norm.weight"):
            full = p.to_local() if hasattr(p, "to_local") else p  # one rank holds the whole (unpadded) tensor
            out.append(full.detach().float().cpu().flatten())
    return torch.cat(out)


def update(batch: TrainBatch, device: torch.device, dims: dict[str, Any], *, mesh: Any = None, chunk: int = 0,
           checkpointing: bool = False, offload: bool = False, mini_batches: int = 1, token_budget: int = 8192,
           seed: int = 0) -> Update:
    """One learner update (as `LearnerGroup.update` runs it on one rank) of a fresh model; `mesh=None`: the
    model unsharded in fp32, no FSDP."""
    # the KL term makes the loss depend on the log-probs (the policy term alone is -advantage at ratio 1)
    algo = AlgorithmConfig(kl_coef=0.1, kl_estimator="k1")
    model = _model(dims, device, checkpointing, seed)
    if mesh is not None:
        model = shard_model(model, mesh, cpu_offload=offload, mixed_precision=device.type == "cuda")
    # SGD: the weight change is the gradient itself (AdamW's first step is about lr x its sign, which bf16's
    # rounding flips on the smallest gradients), so the update's direction compares the gradients
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    before = _sampled_weights(model)
    batcher = TokenBudgetBatcher(token_budget)
    if device.type == "cuda":
        torch.cuda.synchronize()
        release_memory(device)
        torch.cuda.reset_peak_memory_stats()
    if mini_batches > 1:  # the ratio of later mini-batches is taken against the rollout policy
        batch = batch.with_fields(old_logprobs=batch_logprobs(model, batch, batcher.split(batch.lengths), device,
                                                              chunk_tokens=chunk))
    losses, norms = [], []
    for mini in batch.chunk(mini_batches):
        out = train_step(model, optimizer, mini, batcher.split(mini.lengths), scale=1.0, algo=algo, grad_clip=1e9,
                         normalizer=loss_normalizer(mini.loss_mask, algo.loss_agg), device=device,
                         chunk_tokens=chunk)
        losses.append(out["loss"])
        norms.append(out["grad_norm"])
    peak = resident = 0.0
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak, resident = torch.cuda.max_memory_allocated() / GiB, torch.cuda.memory_allocated() / GiB
    delta = _sampled_weights(model) - before
    del model, optimizer, out
    release_memory(device)  # else the next variant's peak counts this one's modules
    return Update(float(np.mean(losses)), float(np.mean(norms)), delta, peak, resident)


def _same(a: Update, b: Update, loss_rel: float, cosine_min: float) -> tuple[bool, str]:
    rel = abs(a.loss - b.loss) / max(abs(b.loss), 1e-12)
    norm_rel = abs(a.grad_norm - b.grad_norm) / max(b.grad_norm, 1e-12)
    cosine = float(torch.nn.functional.cosine_similarity(a.delta.double(), b.delta.double(), dim=0))
    ok = rel <= loss_rel and norm_rel <= 10 * loss_rel and cosine >= cosine_min
    return ok, f"loss {a.loss:.5f} vs {b.loss:.5f} (rel {rel:.1e}), grad norm rel {norm_rel:.1e}, " \
               f"update cosine {cosine:.4f}"


def _saves(feature: Update, base: Update, device: torch.device, resident: bool) -> tuple[bool, str]:
    """Lower peak (chunked logits, checkpointing), or lower resident state (offload: the weights and gradients
    live in host memory between passes; the peak of a logits-bound update does not fall)."""
    if device.type != "cuda":
        return True, ""
    text = f"; peak {feature.peak_gib:.2f} vs {base.peak_gib:.2f} GiB, resident after the update " \
           f"{feature.resident_gib:.2f} vs {base.resident_gib:.2f} GiB"
    return (feature.resident_gib < base.resident_gib if resident else feature.peak_gib < base.peak_gib), text


def run_checks(device: torch.device, rows: int = 8, longest: int = 1024,
               say: Callable[[str], None] = print) -> list[CheckRow]:
    """Every check on `device` (one rank); prints each row as it finishes."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29534")
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=0, world_size=1)
    mesh = init_device_mesh(device.type, (1,))
    dims = WIDTH if device.type == "cuda" else SMALL
    if device.type != "cuda":
        rows, longest = min(rows, 8), min(longest, 64)
    batch = random_batch(rows, longest, dims["vocab_size"])
    # bf16 against fp32 loosely; features against the same bf16 FSDP2 update tightly
    loose, tight = (2e-2, 0.95) if device.type == "cuda" else (1e-5, 0.9999), (5e-3, 0.99)
    out: list[CheckRow] = []

    def record(name: str, ok: bool, measured: str) -> None:
        out.append(CheckRow(name, measured, ok))
        say(f"{'PASS' if ok else 'FAIL'} {name}: {measured}")

    base = update(batch, device, dims, mesh=mesh)
    plain = update(batch, device, dims, mesh=None)
    ok, text = _same(base, plain, *loose)
    record("fsdp2_nccl" if device.type == "cuda" else "fsdp2_gloo", ok,
           f"FSDP2{' bf16' if device.type == 'cuda' else ''} vs unsharded fp32: {text}")
    for name, kwargs in (("chunked_logits", {"chunk": 2048 if device.type == "cuda" else 16}),
                         ("gradient_checkpointing", {"checkpointing": True}),
                         ("cpu_offload", {"offload": True})):
        feature = update(batch, device, dims, mesh=mesh, **kwargs)
        ok, text = _same(feature, base, *tight)
        lower, peak = _saves(feature, base, device, resident=name == "cpu_offload")
        record(name, ok and lower, text + peak)
    two = update(batch, device, dims, mesh=mesh, mini_batches=2)
    ok, text = _same(two, update(batch, device, dims, mesh=None, mini_batches=2), *loose)
    record("mini_batches", ok and float(two.delta.norm()) > float(base.delta.norm()),
           f"2 optimizer steps, FSDP2 vs unsharded fp32: {text}; update size {float(two.delta.norm()):.3e} "
           f"(one step {float(base.delta.norm()):.3e})")
    return out
