"""The reference model: frozen log-probs of the starting policy, for the KL term.

    reference = ReferencePool(cfg, model_path, placement, learners)
    ref_logprobs = reference.logprobs(batch)     # (B, T)

`reference.placement` chooses the layout: `separate` runs `reference.num_workers`
ReferenceWorker actors (data parallel, a full copy each); `colocate` uses the copy
that every learner worker holds next to its policy (sharded like it, no extra
processes); `none` turns the KL term off and returns no log-probs.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import ray
import torch

from kr1.cluster import actor_names, all_alive, get_all, stop_actors
from kr1.config import Config
from kr1.training.batch import TrainBatch
from kr1.training.memory_plan import learner_actor_env
from kr1.training.policy_update import batch_logprobs
from kr1.training.sharded_model import load_causal_lm
from kr1.training.token_budget import TokenBudgetBatcher


class ReferenceWorker:
    """A frozen copy of the starting model; a plain class that `ray.remote` wraps."""

    def __init__(self, cfg: Config, index: int, model_path: str) -> None:
        self.index = index
        self.chunk_tokens, self.temperature = cfg.learner.logits_chunk_tokens, cfg.rollout.temperature
        self.device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
        dtype = cfg.model.dtype if self.device.type == "cuda" else "float32"
        self.model = load_causal_lm(model_path, dtype, cfg.model.gguf_file).to(self.device).eval()
        self.model.requires_grad_(False)

    def __repr__(self) -> str:
        return f"ReferenceWorker({self.index})"

    def ready(self) -> bool:
        return True

    def logprobs(self, part: TrainBatch, micro: Sequence[np.ndarray]) -> np.ndarray:
        return batch_logprobs(self.model, part, micro, self.device, chunk_tokens=self.chunk_tokens,
                              temperature=self.temperature)


class ReferencePool:
    """Reference log-probs for a batch, from separate workers or the learners' colocated copies."""

    def __init__(self, cfg: Config, model_path: str, placement: Any = None, learners: Any = None) -> None:
        self.placement = cfg.reference.placement
        self.learners = learners
        self.batcher = TokenBudgetBatcher(cfg.learner.token_budget)
        self.workers: list[Any] = []
        self.names: list[str] = []
        if self.placement == "separate":
            count = cfg.reference.num_workers
            options = placement.options_for("reference") if placement else [{} for _ in range(count)]
            actor = ray.remote(ReferenceWorker)
            self.names = actor_names("reference-worker", len(options))  # as the Ray dashboard lists them
            self.workers = [actor.options(name=self.names[i], **options[i], **learner_actor_env(cfg)).remote(
                cfg, i, model_path)
                            for i in range(len(options))]
            try:
                get_all([w.ready.remote() for w in self.workers])
            except BaseException:  # a worker that cannot start leaves no other behind
                for worker in self.workers:
                    ray.kill(worker)
                raise
        elif self.placement == "colocate" and learners is None:
            raise ValueError("reference.placement=colocate needs the learner group")

    def logprobs(self, batch: TrainBatch) -> np.ndarray | None:
        """(B, T) reference log-probs, or None when the reference is off."""
        if self.placement == "none":
            return None
        if self.placement == "colocate":
            return self.learners.logprobs(batch, reference=True)
        parts = batch.chunk(len(self.workers))
        refs = [w.logprobs.remote(p, self.batcher.split(p.lengths)) for w, p in zip(self.workers, parts) if len(p)]
        out = np.zeros(batch.input_ids.shape, dtype=np.float32)
        row = 0
        for values in get_all(refs):
            out[row:row + len(values), :values.shape[1]] = values
            row += len(values)
        return out

    def alive(self) -> bool:
        """Every separate worker answers (a colocated reference lives and dies with the learners)."""
        return all_alive(self.workers)

    def close(self) -> None:
        stop_actors(self.workers)
        self.workers = []
