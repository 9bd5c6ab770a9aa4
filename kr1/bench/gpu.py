"""Every GPU check of the learner that needs no Ray or vLLM, in one command for a bare CUDA machine.

    python -m kr1.bench.gpu                          # the checks, then the memory rows: 0.5B, 1.5B, 7B width
    python -m kr1.bench.gpu --skip-checks --rows 1.5b-16k --chunk 0 2048 --out gpu.md
    python -m kr1.bench.gpu --plan-only              # the plan column alone (any machine)
    python -m kr1.bench.gpu --checks-only --device cpu   # the checks' maths over gloo (development)

First the checks of kr1/bench/gpu_checks.py: FSDP2 over NCCL in bf16 against unsharded fp32, chunked
logits, gradient checkpointing, CPU offload and mini-batches, each the same update as without it and
(the memory savers) a lower peak. Then the memory table: kr1.plan's estimate beside what the learner holds.
It exits 1 when a check fails or the plan is below a measured peak.

Each row builds a randomly initialised model of the published dimensions on one CUDA GPU, shards it
with the learner's own FSDP2 code (one rank, NCCL, bf16 mixed precision, gradient checkpointing, a
colocated reference), and runs the learner's own functions on a batch of random token ids with lengths
from half to full: after one update (so that gradients and AdamW's moments exist, as from a run's second
step on), the reference pass (`batch_logprobs`) and another update (`train_step`), token-budget
micro-batches. It reports peak allocated, and peak reserved plus the CUDA context (what
`torch.cuda.mem_get_info` saw in use before the process's first tensor), beside `kr1.plan`'s estimate for the
same configuration and the allocator setting of this process (expandable segments unless
PYTORCH_CUDA_ALLOC_CONF says otherwise, as in the learner). Without CUDA it stops with one line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from kr1.config import Config, load_config
from kr1.errors import UserError, run_cli
from kr1.training.memory_plan import GiB, allocator_conf, check_plan, model_dims

SEVEN_B_WIDTH = {"model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 4,
                 "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
                 "tie_word_embeddings": False}


@dataclass(frozen=True)
class Case:
    model: str  # hub id the planner knows, or "7b-width" (Qwen2.5-7B's width and vocabulary, 4 layers)
    tokens: int  # learner.token_budget
    longest: int  # rollout.max_total_tokens: sequences are half to full this long


CASES = {"0.5b": Case("Qwen/Qwen2.5-0.5B-Instruct", 8192, 2048), "1.5b": Case("Qwen/Qwen2.5-1.5B-Instruct", 8192, 2048),
         "1.5b-16k": Case("Qwen/Qwen2.5-1.5B-Instruct", 16384, 2048), "7b-width": Case("7b-width", 8192, 4096)}


def case_config(case: Case, chunk: int, workdir: Path) -> Config:
    model = case.model
    if model == "7b-width":
        model = str(workdir / "7b-width")
        Path(model).mkdir(exist_ok=True)
        (Path(model) / "config.json").write_text(json.dumps(SEVEN_B_WIDTH))
    return load_config("default", [
        f"model.path={model}", "cluster.gpus_per_node=1", "cluster.colocate=false", "model.dtype=bfloat16",
        "learner.num_workers=1", f"learner.token_budget={case.tokens}", "learner.gradient_checkpointing=true",
        f"rollout.max_total_tokens={case.longest}", "reference.placement=colocate", "rollout.backend=vllm",
        f"learner.logits_chunk_tokens={chunk}"])


def planned(cfg: Config) -> dict[str, float]:
    group = check_plan(cfg).group("learner")
    return {phase: group.total(phase) / GiB for phase in ("reference", "update")}


_CONTEXT: list[float] = []  # GiB in use on the GPU before this process's first tensor, read once


def cuda_context_gib() -> float:
    """This process's CUDA context (and anything else on the GPU), read before its first allocation: read later,
    the blocks earlier rows left in the caching allocator would count twice."""
    import torch

    if not _CONTEXT:
        torch.cuda.set_device(0)
        free, total = torch.cuda.mem_get_info()
        _CONTEXT.append((total - free) / GiB)
    return _CONTEXT[0]


def measure(cfg: Config, seed: int = 0) -> dict[str, dict[str, float]]:
    """Peak allocated and reserved + context (GiB) of the reference pass and one update, on this GPU."""
    import numpy as np
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from transformers import AutoConfig, AutoModelForCausalLM

    from kr1.bench.gpu_checks import release_memory
    from kr1.training.batch import TrainBatch
    from kr1.training.policy_update import batch_logprobs, train_step
    from kr1.training.sharded_model import shard_model
    from kr1.training.token_budget import TokenBudgetBatcher

    device = torch.device("cuda", 0)
    context = cuda_context_gib()
    torch.cuda.set_device(device)
    release_memory(device)
    if not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29533")
        dist.init_process_group("nccl", rank=0, world_size=1)
    mesh = init_device_mesh("cuda", (1,))
    dims = model_dims(cfg)
    hf_config = AutoConfig.for_model("qwen2", hidden_size=dims.hidden_size, intermediate_size=dims.intermediate_size,
                                     num_hidden_layers=dims.num_hidden_layers,
                                     num_attention_heads=dims.num_attention_heads,
                                     num_key_value_heads=dims.num_key_value_heads, vocab_size=dims.vocab_size,
                                     tie_word_embeddings=dims.tie_word_embeddings)
    torch.manual_seed(seed)
    models = []
    for _ in range(2):  # the policy, then the colocated reference
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(hf_config, dtype=torch.float32)
        model.gradient_checkpointing_enable()
        models.append(shard_model(model, mesh, cpu_offload=False, mixed_precision=True))
    policy, reference = models
    reference.requires_grad_(False)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-6)
    rng = np.random.default_rng(seed)
    longest = cfg.rollout.max_total_tokens
    rows = max(1, 32768 // longest)  # 16 rows of 2048 or 8 of 4096 tokens, as the README's table
    lengths = rng.integers(longest // 2, longest + 1, rows)
    mask = (np.arange(longest)[None] < lengths[:, None]).astype(np.int8)
    batch = TrainBatch(input_ids=rng.integers(3, dims.vocab_size, (rows, longest)).astype(np.int64) * mask,
                       attention_mask=mask, loss_mask=mask.copy(), prompt_lengths=np.full(rows, 64),
                       group_ids=np.arange(rows) // 8, advantages=rng.standard_normal(rows).astype(np.float32))
    micro = TokenBudgetBatcher(cfg.learner.token_budget).split(batch.lengths)
    chunk = cfg.learner.logits_chunk_tokens
    # a run's steady state: from its second step on, the reference pass runs beside the policy's gradients
    # (kept between steps) and AdamW's moments (made by the first step)
    train_step(policy, optimizer, batch, micro, normalizer=float(batch.num_loss_tokens), scale=1.0,
               algo=cfg.algorithm, grad_clip=1.0, device=device, chunk_tokens=chunk)
    torch.cuda.empty_cache()  # as the learner does after each update
    out = {}
    for phase in ("reference", "update"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        if phase == "reference":
            batch = batch.with_fields(ref_logprobs=batch_logprobs(reference, batch, micro, device, chunk_tokens=chunk))
        else:
            train_step(policy, optimizer, batch, micro, normalizer=float(batch.num_loss_tokens), scale=1.0,
                       algo=cfg.algorithm, grad_clip=1.0, device=device, chunk_tokens=chunk)
        torch.cuda.synchronize()
        out[phase] = {"allocated": torch.cuda.max_memory_allocated() / GiB,
                      "reserved+context": torch.cuda.max_memory_reserved() / GiB + context}
    del policy, reference, optimizer, models, model
    release_memory(device)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kr1.bench.gpu", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", nargs="+", choices=sorted(CASES), default=list(CASES), metavar="ROW",
                        help=f"which configurations ({', '.join(CASES)})")
    parser.add_argument("--chunk", nargs="+", type=int, default=[0, 2048], help="learner.logits_chunk_tokens values")
    parser.add_argument("--plan-only", action="store_true", help="print the plan, measure nothing")
    parser.add_argument("--out", type=Path, help="also write the checks and the table to this markdown file")
    parser.add_argument("--skip-checks", action="store_true", help="the memory table alone")
    parser.add_argument("--checks-only", action="store_true", help="the checks alone")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cpu: the checks' maths over gloo, no memory figures (with --checks-only)")
    args = parser.parse_args(argv)
    if args.device == "cpu" and not args.checks_only:
        raise UserError("--device cpu runs the checks alone: add --checks-only")
    failed: list[str] = []
    checks: list[str] = []
    if not args.plan_only:
        import torch

        if args.device == "cuda" and not torch.cuda.is_available():
            raise UserError("python -m kr1.bench.gpu measures a CUDA GPU and this machine has none "
                            "(--plan-only prints the plan alone; --checks-only --device cpu the checks' maths)")
        if not args.skip_checks:
            from kr1.bench.gpu_checks import run_checks

            device = torch.device("cuda", 0) if args.device == "cuda" else torch.device("cpu")
            if device.type == "cuda":
                cuda_context_gib()  # before the checks' first tensor
            rows = run_checks(device, say=lambda line: print(line, file=sys.stderr, flush=True))
            checks = ["| check | measured | result |", "|---|---|---|"] + [
                f"| {r.name} | {r.measured} | {'pass' if r.passed else 'FAIL'} |" for r in rows] + [""]
            failed += [r.name for r in rows if not r.passed]
    if args.checks_only:
        print("\n".join(checks))
        if args.out:
            args.out.write_text("\n".join(checks) + "\n")
        if failed:
            raise SystemExit(f"failed: {', '.join(failed)}")
        return
    conf = allocator_conf()[0]
    lines = [f"allocator: PYTORCH_CUDA_ALLOC_CONF={conf}", "",
             "| model | tokens | chunk | phase | kr1.plan GiB | peak allocated | peak reserved + context "
             "| plan / measured |", "|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.rows:
            for chunk in args.chunk:
                cfg = case_config(CASES[name], chunk, Path(tmp))
                plan = planned(cfg)
                got = {} if args.plan_only else measure(cfg)
                for phase in ("reference", "update"):
                    m = got.get(phase)
                    cells = ["-", "-", "-"] if m is None else [
                        f"{m['allocated']:.2f}", f"{m['reserved+context']:.2f}",
                        f"{plan[phase] / m['reserved+context']:.2f}"]
                    lines.append(f"| {name} | {CASES[name].tokens} | {chunk} | {phase} | {plan[phase]:.2f} | "
                                 + " | ".join(cells) + " |")
                    if m is not None and plan[phase] < m["reserved+context"]:
                        failed.append(f"plan below measured ({name}, chunk {chunk}, {phase})")
                print(lines[-2] + "\n" + lines[-1], file=sys.stderr, flush=True)
    table = "\n".join(checks + lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    run_cli(main)
