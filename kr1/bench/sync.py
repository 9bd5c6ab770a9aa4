"""Weight-sync benchmark: what the object-store sync ships and how long it takes, fp32 vs bf16.

    rows = sync_rows(tiny_model_dir)                         # part of `python -m kr1.bench`

For the tiny model and a 2-layer Qwen2 of width 256 with Qwen2.5's vocabulary (the embeddings
dominate, as in real models): the learner side's cast and cut into buckets (`state_buckets`,
512 MiB), `ray.put` of each bucket, and the engine side's fetch and load into a model of that dtype,
timed end to end in this process, best of 3 alternating runs (the first ray.put of a process is slow).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import ray
import torch

from kr1.bench.memory import random_model
from kr1.bench.table import Row
from kr1.training.weight_buckets import state_buckets

BUCKET = 512 << 20


def _ship(model: Any, dtype: torch.dtype) -> tuple[int, float]:
    """(bytes shipped, seconds) of one sync of `model`'s weights into an engine model in `dtype`."""
    engine = type(model)(model.config).to(dtype)
    state = {k: v.detach() for k, v in model.state_dict().items()}
    start = time.perf_counter()
    refs = [ray.put(part) for part in state_buckets(state, dtype, BUCKET)]
    for ref in refs:
        engine.load_state_dict(ray.get(ref), strict=False)
    seconds = time.perf_counter() - start
    size = sum(t.numel() * t.element_size() for ref in refs for t in ray.get(ref).values())
    return size, seconds


def sync_rows(tiny_model: str, progress: Callable[[str], None] = lambda s: None) -> list[Row]:
    from transformers import AutoModelForCausalLM

    models = {"tiny model": AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32),
              "vocab 151,936, width 256": random_model(151_936, 256)}
    rows = []
    for name, model in models.items():
        progress(f"sync: {name}")
        runs = [(_ship(model, torch.bfloat16), _ship(model, torch.float32)) for _ in range(3)]
        bf16, bf16_s = runs[0][0][0], min(r[0][1] for r in runs)
        fp32, fp32_s = runs[0][1][0], min(r[1][1] for r in runs)
        rows.append(Row("weight sync", f"object store, {name}: bf16 vs fp32", f"{bf16 / 2**20:,.1f} MiB",
                        f"{fp32 / 2**20:,.1f} MiB", bf16 / fp32, "half the bytes", "yes" if bf16 * 2 == fp32 else "no",
                        f"cast, buckets, put, fetch and load: {bf16_s * 1000:.0f} ms vs {fp32_s * 1000:.0f} ms"))
    return rows
