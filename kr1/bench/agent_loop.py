"""The agent loop against the turn loop, on the same engine, prompts and seeds (part of `python -m kr1.bench`).

    rows = agent_loop_rows(cfg, model_path, index_dir, questions, backends=("hf", "vllm"))

Per backend: generated tokens/s of one training step's rollout (the embedded default's
prompts x samples, sampled as training samples) played by the turn loop and by the agent
loop; the same with a heavy tail (one prompt in eight is noise, whose episodes run every
segment to its token limit, so a turn waits for them); and the agent loop's tokens/s over
the same engine's plain batched generation of the same number of tokens (no turns, no
retrieval: the limit). Both
loops search the same Ray retriever pool; the engines run in this process with one torch
thread, as an engine actor does.
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import torch

from kr1.bench.table import Row, met
from kr1.config import Config
from kr1.data import QARecord
from kr1.rollout.agent_loop import BackgroundLoop, QueryBatcher, SegmentBatcher, play_episodes
from kr1.rollout.episodes import Episode, RolloutSettings, new_episodes, run_episodes
from kr1.run.pools import start_retriever

Progress = Callable[[str], None]


def noise_questions(questions: Sequence[QARecord], every: int, seed: int = 0) -> list[QARecord]:
    """Every `every`-th question's text replaced by 30 random numbers: the heavy tail (the tiny model
    writes such episodes' segments to their token limit, most of the time)."""
    rng = random.Random(seed)
    return [replace(q, problem=" ".join(str(rng.randint(0, 99999)) for _ in range(30)))
            if i % every == every - 1 else q for i, q in enumerate(questions)]


class BenchEngine:
    """One backend's engine with both loops over it, as a rollout engine actor drives them."""

    def __init__(self, backend: str, cfg: Config, model_path: str, search: Callable) -> None:
        from kr1.rollout.async_vllm import make_generator
        from kr1.rollout.generation import generation_executor

        self.backend, self.cfg, self.search = backend, cfg, search
        self.loop = BackgroundLoop()
        r = cfg.rollout
        extra = {"loop": self.loop, "max_model_len": r.max_total_tokens} if backend == "vllm" else {}
        self.generator = make_generator(backend, model_path, mode="agent", seed=cfg.trainer.seed,
                                        sampled_logprobs=False, **extra)
        self.agenerate = getattr(self.generator, "agenerate", None) or SegmentBatcher(
            self.generator.generate, generation_executor()).generate
        self.tokenizer = self.generator.tokenizer

    def episodes(self, questions: Sequence[QARecord], n: int) -> list[Episode]:
        return new_episodes(questions, self.tokenizer, n, self.cfg.rollout.prompt_template)

    def turn(self, questions: Sequence[QARecord], n: int, settings: RolloutSettings, seed: int) -> list[Episode]:
        self.generator.reseed(seed)
        return run_episodes(self.episodes(questions, n), self.generator.generate, self.search, self.tokenizer, settings)

    def agent(self, questions: Sequence[QARecord], n: int, settings: RolloutSettings, seed: int) -> list[Episode]:
        batcher = QueryBatcher(self.search, self.cfg.rollout.search_batch_size, self.cfg.rollout.search_flush_ms)
        return self.loop.run(play_episodes(self.episodes(questions, n), self.agenerate, batcher, self.tokenizer,
                                           settings, seed=seed))

    def plain(self, contexts: list[list[int]], tokens: int) -> int:
        """Batched generation of exactly `tokens` new tokens per context, no stop strings: the limit."""
        if self.backend == "vllm":
            from vllm import SamplingParams
            from vllm.inputs import TokensPrompt

            params = SamplingParams(max_tokens=tokens, min_tokens=tokens, temperature=self.cfg.rollout.temperature,
                                    ignore_eos=True, seed=0)

            async def run() -> int:
                import asyncio

                async def one(i: int, c: list[int]) -> int:
                    final = None
                    async for out in self.generator.llm.generate(TokensPrompt(prompt_token_ids=c), params,
                                                                 request_id=f"plain-{time.time_ns()}-{i}"):
                        final = out
                    return len(final.outputs[0].token_ids)
                return sum(await asyncio.gather(*(one(i, c) for i, c in enumerate(contexts))))
            return self.loop.run(run())
        g = self.generator
        width = max(map(len, contexts))
        ids = torch.full((len(contexts), width), g.pad_id)
        mask = torch.zeros_like(ids)
        for i, c in enumerate(contexts):
            ids[i, width - len(c):], mask[i, width - len(c):] = torch.tensor(c), 1
        with torch.no_grad():
            out = g.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=tokens, min_new_tokens=tokens,
                                   do_sample=True, temperature=self.cfg.rollout.temperature, pad_token_id=g.pad_id)
        return int(out[:, width:].numel())

    def close(self) -> None:
        if hasattr(self.generator, "close"):
            self.generator.close()
        self.loop.close()


def _rate(fn: Callable[[], list[Episode]], repeats: int) -> tuple[float, float, int, list[Episode]]:
    """Median generated tokens/s over `repeats` runs (each its own seed), its seconds, tokens, last episodes."""
    rates, seconds, tokens = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        episodes = fn()
        seconds.append(time.perf_counter() - start)
        tokens.append(sum(e.generated_tokens for e in episodes))
        rates.append(tokens[-1] / seconds[-1])
    i = rates.index(statistics.median_low(rates))
    return rates[i], seconds[i], tokens[i], episodes


def _segments(episodes: Sequence[Episode]) -> str:
    lengths = sorted(n for e in episodes for n in _segment_lengths(e))
    return f"segments p50 {lengths[len(lengths) // 2]}, max {lengths[-1]} tokens" if lengths else "no segments"


def _segment_lengths(e: Episode) -> list[int]:
    out, run = [], 0
    for m in e.loss_mask + [0]:
        if m:
            run += 1
        elif run:
            out, run = out + [run], 0
    return out


def agent_loop_rows(cfg: Config, model_path: str | Path, index_dir: Path, questions: Sequence[QARecord],
                    backends: Sequence[str], repeats: int = 3, progress: Progress = lambda s: None,
                    heavy_tail: bool = True) -> list[Row]:
    """Agent loop vs turn loop per backend (default and, with `heavy_tail`, heavy-tailed workloads), and vs
    the limit."""
    pool = start_retriever(cfg.retriever, index_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a rollout engine actor: Ray sets OMP_NUM_THREADS to its one CPU
    n = cfg.rollout.n_samples
    settings = RolloutSettings.from_config(cfg)
    tail = noise_questions(questions, every=8)
    rows: list[Row] = []
    try:
        for backend in backends:
            progress(f"agent loop: {backend} engine")
            engine = BenchEngine(backend, cfg, str(model_path), pool.search)
            try:
                engine.agent(questions[:2], 2, settings, 0)  # warm-ups
                engine.turn(questions[:2], 2, settings, 0)
                measured = {}
                for name, qs in (("default", questions), ("heavy tail", tail))[:2 if heavy_tail else 1]:
                    progress(f"agent loop: {backend}, {name}")
                    seeds = iter(range(1, 1000))
                    measured[name] = (_rate(lambda: engine.turn(qs, n, settings, next(seeds)), repeats),
                                      _rate(lambda: engine.agent(qs, n, settings, next(seeds)), repeats))
                contexts = [e.prompt_ids for e in measured["default"][1][3]]
                per = max(1, round(measured["default"][1][2] / len(contexts)))
                start = time.perf_counter()
                limit = engine.plain(contexts, per) / (time.perf_counter() - start)
            finally:
                engine.close()
            default_ratio = measured["default"][1][0] / measured["default"][0][0]
            for name, (turn, agent) in measured.items():
                ratio = agent[0] / turn[0]
                goal, ok = ((">= 1.5x", ratio >= 1.5) if name == "default"
                            else ("> the default's", ratio > default_ratio))
                rows.append(Row("agent loop", f"agent vs turn loop, {backend}, {name} ({len(questions)} prompts x {n})",
                                f"{agent[0]:,.0f} tok/s", f"{turn[0]:,.0f} tok/s", ratio, goal, met(ok),
                                f"{agent[2]:,} vs {turn[2]:,} tokens in {agent[1]:.2f} s vs {turn[1]:.2f} s (median "
                                f"of {repeats}, sampled); {_segments(agent[3])}"))
            agent_rate = measured["default"][1][0]
            rows.append(Row("agent loop", f"agent loop vs plain batched generation, {backend}",
                            f"{agent_rate:,.0f} tok/s", f"{limit:,.0f} tok/s", agent_rate / limit, ">= 0.7",
                            met(agent_rate / limit >= 0.7),
                            f"plain: the same {len(contexts)} prompts, {per} tokens each in one batch, no stop "
                            "strings, no turns, no retrieval"))
    finally:
        torch.set_num_threads(threads)
        pool.close()
    return rows
