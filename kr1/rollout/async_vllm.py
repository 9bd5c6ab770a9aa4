"""vLLM's async engine (`AsyncLLM`) behind the generator interface, for the agent loop; and
`make_generator`, which picks the engine for `rollout.backend` and `rollout.mode`.

    engine = VLLMAsyncGenerator(model_path, loop=BackgroundLoop())
    ids = await engine.agenerate(context_ids, max_new_tokens=96, temperature=0.7, top_p=1.0, seed=11)

Every segment is its own request, so vLLM batches them continuously; the blocking methods
(`generate` for the turn loop, weight loading, log-probs) run its coroutines on the loop.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from typing import Any, Iterable, Sequence

import torch

from kr1.rollout.generation import (Generator, HFGenerator, VLLMGenerator, end_token_ids,
                                   llvmlite_hidden, prompt_logprobs, turn_seed, vllm_engine_args, vllm_segment)
from kr1.rollout.protocol import STOP_STRINGS


def _load_serialized_weights_into_worker(worker: Any, blob: bytes) -> bool:
    # the async engine's worker is another process: the part arrives as torch.save bytes
    import io

    state = torch.load(io.BytesIO(blob), weights_only=True)
    worker.reload_weights(weights_iterator=iter(list(state.items())), is_checkpoint_format=True)
    return True


class VLLMAsyncGenerator:
    """Continuous batching with vLLM's `AsyncLLM`: every segment is its own request, so an episode whose
    segment ended re-enters the running batch while others still decode. Prefix caching is on, so a
    continued episode does not recompute its context. The engine core runs in child processes; its
    coroutines run on `loop` (one per engine actor), and the blocking methods wrap them for the turn loop."""

    def __init__(self, model_path: str, dtype: str = "float32", seed: int = 0, gguf_file: str | None = None,
                 max_model_len: int = 2048, tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.5,
                 enforce_eager: bool = False, enable_sleep_mode: bool = False, weight_sync: str = "object_store",
                 loop: Any = None, sampled_logprobs: bool = True) -> None:
        from kr1.rollout.agent_loop import BackgroundLoop

        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # vLLM logs every call at INFO/WARNING
        # the object-store weight load sends a function to the engine's worker process, which vLLM only
        # pickles when allowed; the engine is this actor's own child, not a network service
        os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
        args = vllm_engine_args(model_path, dtype, seed, gguf_file, max_model_len, tensor_parallel_size,
                                gpu_memory_utilization, enforce_eager, enable_sleep_mode, weight_sync)
        args.update(enable_prefix_caching=True, disable_log_stats=True)
        self.own_loop = loop is None
        self.loop = loop or BackgroundLoop()
        self.llm = self.loop.run(self._start(args))
        self.tokenizer = self.llm.tokenizer
        self.end_ids = end_token_ids(self.tokenizer)
        self.pieces: dict[int, str] = {}
        self.seed, self.calls, self.requests = seed, 0, 0
        self.logprobs = 0 if sampled_logprobs else None  # the sampled token's log-prob with each token

    @staticmethod
    async def _start(args: dict[str, Any]) -> Any:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        with llvmlite_hidden():
            return AsyncLLM.from_engine_args(AsyncEngineArgs(**args))

    def _params(self, max_new_tokens: int, temperature: float, top_p: float, seed: int, **extra: Any) -> Any:
        from vllm import SamplingParams

        return SamplingParams(max_tokens=max_new_tokens, temperature=temperature,
                              top_p=top_p if temperature > 0 else 1.0, stop=list(STOP_STRINGS),
                              include_stop_str_in_output=True, stop_token_ids=sorted(self.end_ids),
                              skip_special_tokens=False, seed=seed, **extra)

    async def _request(self, context: Sequence[int], params: Any) -> Any:
        from vllm.inputs import TokensPrompt

        self.requests += 1
        final = None
        async for output in self.llm.generate(TokensPrompt(prompt_token_ids=list(context)), params,
                                              request_id=f"kr1-{self.requests}"):
            final = output
        return final

    async def agenerate(self, context: list[int], max_new_tokens: int, temperature: float, top_p: float,
                        seed: int) -> list[int]:
        """One segment of one episode (the agent loop's call), with its tokens' log-probs when asked for."""
        output = await self._request(context, self._params(max_new_tokens, temperature, top_p, seed,
                                                           logprobs=self.logprobs))
        return vllm_segment(output, self.tokenizer, self.end_ids, max_new_tokens, self.pieces)

    def generate(self, contexts: Sequence[Sequence[int]], max_new_tokens: Sequence[int], temperature: float = 1.0,
                 top_p: float = 1.0) -> list[list[int]]:
        """A whole turn at once (the turn loop on this engine): every segment submitted, all awaited."""
        if not contexts:
            return []
        self.calls += 1
        seeds = [turn_seed(self.seed, self.calls, i) for i in range(len(contexts))]

        async def turn() -> list[list[int]]:
            return list(await asyncio.gather(*(self.agenerate(list(c), n, temperature, top_p, s)
                                               for c, n, s in zip(contexts, max_new_tokens, seeds))))
        return self.loop.run(turn())

    def load_state_dict(self, parts: Iterable[dict[str, torch.Tensor]]) -> None:
        """Load Hugging Face-named weights part by part into the engine's worker processes."""
        import io

        for part in parts:
            blob = io.BytesIO()
            torch.save({k: v.detach().cpu() for k, v in part.items()}, blob)
            self.loop.run(self.llm.collective_rpc(_load_serialized_weights_into_worker, args=(blob.getvalue(),)))
        self.loop.run(self.llm.reset_prefix_cache())  # cached KV was computed with the old weights

    def sequence_logprobs(self, sequences: Sequence[Sequence[int]]) -> list[list[float]]:
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)

        async def score() -> list[Any]:
            return list(await asyncio.gather(*(self._request(s, params) for s in sequences)))
        return prompt_logprobs(self.loop.run(score()), sequences)

    def reseed(self, seed: int) -> None:
        self.seed, self.calls = seed, 0

    def control(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call one of the engine's own methods (sleep, wake_up, the weight-transfer control plane)."""
        result = getattr(self.llm, method)(*args, **kwargs)
        return self.loop.run(result) if inspect.isawaitable(result) else result

    def close(self) -> None:
        """Stop the engine's processes (on its loop, whose output handler it cancels)."""
        async def shutdown() -> None:
            self.llm.shutdown()
        self.loop.run(shutdown())
        if self.own_loop:
            self.loop.close()


def make_generator(backend: str, model_path: str, mode: str = "turn", **kwargs: Any) -> Generator:
    """The generator for `rollout.backend`; vLLM's agent loop runs on its async engine."""
    if backend == "hf":
        return HFGenerator(model_path, **{k: v for k, v in kwargs.items()
                                          if k in ("dtype", "seed", "gguf_file", "sampled_logprobs")})
    if backend == "vllm":
        return VLLMAsyncGenerator(model_path, **kwargs) if mode == "agent" else VLLMGenerator(model_path, **kwargs)
    raise ValueError(f"unknown rollout backend {backend!r} (hf or vllm)")
