"""Learner memory benchmark: peak resident memory of one update as responses grow.

    rows = memory_rows(model_path, rows=64, prompt=64, response=96, budget=8192)   # via python -m kr1.bench
    python -m kr1.bench.memory --model DIR --rows 64 --prompt 64 --response 768 --budget 8192   # one config

Each configuration runs in a fresh process: load the model, build AdamW and a synthetic
`TrainBatch`, reset the kernel's peak-RSS mark (VmHWM; ru_maxrss where /proc is
missing), run one `kr1.training.policy_update.train_step`, and report how far the peak rose
above the resident memory before it. Token-budget micro-batches (`TokenBudgetBatcher`)
are compared with a fixed number of rows per micro-batch, the count the budget gives
at the shortest length, so the two start equal and only growth differs. Torch runs one
thread, as in a learner actor, and glibc's mmap threshold is fixed (see `run_child`):
without both, the peak of identical runs varies.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

from kr1.bench.table import Row, met

MULTIPLES = (1, 4, 8)
GOAL = 1.25  # token budget: peak within this factor across the lengths


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def _start_peak() -> tuple[float, bool]:
    """RSS now, and whether the kernel's high-water mark was reset to it (Linux); else ru_maxrss is used."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_mb("VmRSS"), True
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, False  # KiB on Linux


def _peak(reset: bool) -> float:
    return _status_mb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def random_model(vocab: int, hidden: int, seed: int = 0):
    """A 2-layer Qwen2 of `vocab` tokens and width `hidden`, randomly initialised (nothing to download)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    return Qwen2ForCausalLM(Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
                                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                        tie_word_embeddings=True)).float()


def measure(model_path: str, rows: int, prompt: int, response: int, budget: int | None,
            rows_per_micro: int | None, seed: int = 0, chunk: int = 0) -> dict[str, float]:
    """Run in this (fresh) process: peak RSS of one train_step above the level after set-up, in MiB, its
    seconds and loss. `model_path` "random:VOCAB:HIDDEN" builds `random_model(VOCAB, HIDDEN)`."""
    import time

    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    from kr1.config import load_config
    from kr1.training.batch import TrainBatch
    from kr1.training.policy_update import train_step
    from kr1.training.token_budget import TokenBudgetBatcher

    torch.manual_seed(seed)
    torch.set_num_threads(1)  # as in a learner actor: Ray sets OMP_NUM_THREADS to its one CPU
    if model_path.startswith("random:"):
        model = random_model(*(int(x) for x in model_path.split(":")[1:]), seed=seed)
    else:
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    rng = np.random.default_rng(seed)
    width = prompt + response
    loss_mask = np.zeros((rows, width), np.int8)
    loss_mask[:, prompt:] = 1
    batch = TrainBatch(input_ids=rng.integers(3, model.config.vocab_size, (rows, width)).astype(np.int64),
                       attention_mask=np.ones((rows, width), np.int8), loss_mask=loss_mask,
                       prompt_lengths=np.full(rows, prompt, np.int64), group_ids=np.arange(rows) // 8,
                       advantages=rng.standard_normal(rows).astype(np.float32),
                       ref_logprobs=-rng.random((rows, width)).astype(np.float32))
    if budget is not None:
        micro = TokenBudgetBatcher(budget).split(batch.lengths)
    else:
        micro = [np.arange(i, min(i + rows_per_micro, rows)) for i in range(0, rows, rows_per_micro)]
    before, reset = _start_peak()
    start = time.perf_counter()
    out = train_step(model, optimizer, batch, micro, normalizer=float(batch.num_loss_tokens), scale=1.0,
                     algo=load_config("default").algorithm, grad_clip=1.0, device=torch.device("cpu"),
                     chunk_tokens=chunk)
    return {"peak_mb": _peak(reset) - before, "baseline_mb": before, "micro_batches": len(micro),
            "largest_micro_tokens": max(len(m) for m in micro) * width, "seconds": time.perf_counter() - start,
            "loss": out["loss"]}


def run_child(model_path: str, rows: int, prompt: int, response: int, strategy: str,
              chunk: int = 0) -> dict[str, float]:
    """`measure` in a fresh process (`strategy`: "budget:N" or "rows-per-micro:N")."""
    kind, value = strategy.split(":")
    cmd = [sys.executable, "-m", "kr1.bench.memory", "--model", model_path, "--rows", str(rows), "--prompt",
           str(prompt), "--response", str(response), f"--{kind}", value, "--chunk", str(chunk)]
    # glibc raises its mmap threshold as large blocks are freed, after which freed activations stay
    # resident and the peak varies by tens of percent between identical runs; a fixed threshold
    # (its default value) returns them to the OS, so RSS follows the live tensors
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory_rows(model_path: str, rows: int, prompt: int, response: int, budget: int,
                progress: Callable[[str], None] = lambda s: None) -> list[Row]:
    """Peak-memory rows for responses of 1x, 4x and 8x `response` tokens, both batching strategies."""
    fixed = max(1, budget // (prompt + response))  # what the budget gives at 1x
    strategies = {"token budget": f"budget:{budget}", "fixed count": f"rows-per-micro:{fixed}"}
    configs = [(m, name) for m in MULTIPLES for name in strategies]
    progress("memory: one process per config")
    # RSS is per process, so two configs can run side by side without touching each other's figures
    with ThreadPoolExecutor(2) as workers:
        results = list(workers.map(lambda c: run_child(model_path, rows, prompt, response * c[0],
                                                        strategies[c[1]]), configs))
    peak = {config: r for config, r in zip(configs, results)}
    out = []
    for m in MULTIPLES:
        kr1, base = peak[m, "token budget"], peak[m, "fixed count"]
        out.append(Row("learner memory", f"response {m}x ({response * m} tokens), {rows} rows",
                       f"{kr1['peak_mb']:,.0f} MiB", f"{base['peak_mb']:,.0f} MiB",
                       base["peak_mb"] / max(kr1["peak_mb"], 1e-9), notes=(
                           f"peak RSS above set-up; token budget {budget}: {kr1['micro_batches']} micro-batches; "
                           f"fixed {fixed} rows: {base['micro_batches']}; ratio = fixed / budget")))
    growth = {name: max(peak[m, name]["peak_mb"] for m in MULTIPLES)
              / max(min(peak[m, name]["peak_mb"] for m in MULTIPLES), 1e-9) for name in strategies}
    out.append(Row("learner memory", f"peak max/min over {'/'.join(f'{m}x' for m in MULTIPLES)}",
                   f"{growth['token budget']:.2f}x", f"{growth['fixed count']:.2f}x", growth["token budget"],
                   f"<= {GOAL}x", met(growth["token budget"] <= GOAL),
                   "ratio = the token budget's max/min; baseline = fixed-count micro-batches"))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="peak RSS of one learner update (one configuration)")
    parser.add_argument("--model", required=True, help="model directory, or random:VOCAB:HIDDEN")
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--prompt", type=int, required=True)
    parser.add_argument("--response", type=int, required=True)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--budget", type=int, help="token budget per micro-batch (TokenBudgetBatcher)")
    group.add_argument("--rows-per-micro", type=int, help="fixed rows per micro-batch")
    parser.add_argument("--chunk", type=int, default=0, help="learner.logits_chunk_tokens")
    args = parser.parse_args(argv)
    result = measure(args.model, args.rows, args.prompt, args.response, args.budget, args.rows_per_micro,
                     chunk=args.chunk)
    print(json.dumps({k: v if math.isfinite(v) else None for k, v in result.items()}))


if __name__ == "__main__":
    main()
