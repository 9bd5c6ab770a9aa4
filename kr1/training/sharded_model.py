"""The policy and reference models as the learner holds them: a Hugging Face causal LM, sharded by FSDP2.

    model = load_causal_lm(path, "float32")                      # transformers, no download under HF_HUB_OFFLINE
    model = shard_model(model, mesh, cpu_offload=False, mixed_precision=True)

Pure torch: the learner and reference actors call these, and so do tests without Ray.
"""

from __future__ import annotations

from typing import Any

import torch


def load_causal_lm(path: str, dtype: str, gguf_file: str | None = None) -> Any:
    """A Hugging Face causal LM (directory, hub id, or GGUF file inside a directory) in `dtype`."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    return AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype), **kwargs)


def shard_model(model: Any, mesh: Any, cpu_offload: bool, mixed_precision: bool) -> Any:
    """FSDP2: each decoder layer is its own unit (its parameters gathered only while it runs), then the root."""
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

    kwargs: dict[str, Any] = {"mesh": mesh}
    if cpu_offload:
        # pinned host memory needs an accelerator (a CPU-only run keeps the same code path, unpinned)
        kwargs["offload_policy"] = CPUOffloadPolicy(pin_memory=torch.cuda.is_available())
    if mixed_precision:
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for layer in model.model.layers:
        fully_shard(layer, **kwargs)
    fully_shard(model, **kwargs)
    return model
