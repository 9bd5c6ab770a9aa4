"""The agent loop: every episode plays on its own, retrieval streams beside generation.

    batcher = QueryBatcher(pool.search, max_batch=32, flush_ms=5)
    await play_episodes(episodes, generator.agenerate, batcher, tokenizer, settings, seed=7)

Each episode is one coroutine: generate a segment, parse it, search or answer, append,
generate again, without waiting for the other episodes. Segments go to a continuously
batching engine (vLLM's `AsyncLLM`) or a segment batcher over a batched `generate`, so a
short segment's episode is back in the running batch while long ones still decode. The
queries of all in-flight episodes meet in `QueryBatcher`, which sends a batch to the
retriever when it holds `max_batch` queries or `flush_ms` after its first one arrived.

Each turn is played by the same functions as the turn loop (`take_segment`, `take_hits`),
so an episode means the same on both loops; every segment is sampled with its own seed
(sampling seed, episode, turn), which makes an episode independent of which others
happened to share its batch.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Coroutine, Sequence, TypeVar

from kr1.retrieval.hits import Hit
from kr1.rollout.episodes import (Episode, RolloutSettings, SearchFn, close_episode, encode, take_hits, take_segment,
                                  turn_budget)
from kr1.rollout.protocol import INVALID_FEEDBACK

# (context ids, max new tokens, temperature, top_p, seed) -> the segment's ids
AsyncGenerateFn = Callable[[list[int], int, float, float, int], Awaitable[list[int]]]
# (contexts, max new tokens, temperature, top_p, seeds) -> one segment per context
SeededBatchGenerateFn = Callable[[Sequence[Sequence[int]], Sequence[int], float, float, Sequence[int]], list[list[int]]]
T = TypeVar("T")


def segment_seed(seed: int, episode: int, turn: int) -> int:
    """The sampling seed of one segment: fixed by (rollout seed, episode, turn), not by batch-mates."""
    return (seed * 1_000_003 + episode * 10_007 + turn * 101 + 1) % (2**31 - 1)


@dataclass(frozen=True)
class SearchResult:
    hits: list[Hit]
    batch_size: int  # queries in the retriever batch that served this one
    batch_unique: int  # distinct queries in it (the retriever searched each once)
    batch_seconds: float  # that batch's wall time
    latency: float  # seconds from asking to having the hits (waiting for the batch included)


class QueryBatcher:
    """Gathers the queries of in-flight episodes into retriever batches, searched in a thread.

    A batch goes when it holds `max_batch` queries, or `flush_ms` after its first query
    arrived; batches run concurrently, so a slow one does not hold up the next.
    """

    def __init__(self, search: SearchFn, max_batch: int, flush_ms: float,
                 executor: ThreadPoolExecutor | None = None) -> None:
        # no defaults of its own: rollout.search_batch_size and rollout.search_flush_ms are the only ones
        if max_batch < 1 or flush_ms < 0:
            raise ValueError(f"QueryBatcher needs max_batch >= 1 and flush_ms >= 0, got {max_batch}, {flush_ms}")
        self.search_fn, self.max_batch, self.flush_ms = search, max_batch, flush_ms
        self.executor = executor
        self.pending: list[tuple[str, asyncio.Future, float]] = []
        self.timer: asyncio.TimerHandle | None = None
        self.running: set[asyncio.Task] = set()

    async def search(self, query: str) -> SearchResult:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending.append((query, future, time.perf_counter()))
        if len(self.pending) >= self.max_batch:
            self.flush()
        elif self.timer is None:
            self.timer = loop.call_later(self.flush_ms / 1000, self.flush)
        return await future

    def flush(self) -> None:
        """Send what is pending now as one batch."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        batch, self.pending = self.pending, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self.running.add(task)
            task.add_done_callback(self.running.discard)

    async def _run(self, batch: list[tuple[str, asyncio.Future, float]]) -> None:
        start = time.perf_counter()
        try:
            results = await asyncio.get_running_loop().run_in_executor(
                self.executor, self.search_fn, [query for query, _, _ in batch])
        except Exception as error:  # every waiting episode sees the retriever's error
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(error)
            return
        end = time.perf_counter()
        unique = getattr(results, "unique", len(batch))
        for (_, future, asked), hits in zip(batch, results):
            if not future.done():
                future.set_result(SearchResult(list(hits), len(batch), unique, end - start, end - asked))


async def play_episode(episode: Episode, index: int, generate: AsyncGenerateFn, batcher: QueryBatcher,
                       tokenizer: Any, settings: RolloutSettings, seed: int, feedback: Sequence[int]) -> Episode:
    """Play one episode to its end: segment, parse, search or answer, append, repeat."""
    for turn in range(settings.max_turns):
        budget = turn_budget(episode, settings)
        if episode.finish or not budget:
            break
        ids = await generate(episode.prompt_ids + episode.response_ids, budget, settings.temperature,
                             settings.top_p, segment_seed(seed, index, turn))
        query = take_segment(episode, ids, tokenizer, settings, turn == settings.max_turns - 1, feedback)
        if query is not None:
            result = await batcher.search(query)
            episode.search_seconds += result.batch_seconds / result.batch_size
            episode.search_latencies.append(result.latency)
            episode.search_batch_sizes.append(result.batch_size)
            episode.search_batch_unique.append(result.batch_unique)
            take_hits(episode, result.hits, tokenizer, settings)
    close_episode(episode, tokenizer, settings)
    return episode


async def play_episodes(episodes: list[Episode], generate: AsyncGenerateFn, batcher: QueryBatcher, tokenizer: Any,
                        settings: RolloutSettings, seed: int = 0) -> list[Episode]:
    """Play every episode as its own task; returns `episodes`, finished, in their order."""
    feedback = encode(tokenizer, INVALID_FEEDBACK)
    await asyncio.gather(*(play_episode(e, i, generate, batcher, tokenizer, settings, seed, feedback)
                           for i, e in enumerate(episodes)))
    return episodes


class SegmentBatcher:
    """Per-segment requests onto a batched, blocking `generate`: whatever is waiting when the
    generator falls idle goes as the next batch (a backend without continuous batching)."""

    def __init__(self, generate: SeededBatchGenerateFn, executor: ThreadPoolExecutor) -> None:
        # the executor is the caller's (`generation_executor()`): a bare new thread would run torch with
        # OpenMP's default thread count, not the engine's
        self.generate_fn = generate
        self.executor = executor
        self.pending: list[tuple[list[int], int, int, asyncio.Future]] = []
        self.sampling: tuple[float, float] | None = None
        self.busy = False

    async def generate(self, context: list[int], max_new_tokens: int, temperature: float, top_p: float,
                       seed: int) -> list[int]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending.append((context, max_new_tokens, seed, future))
        self.sampling = (temperature, top_p)  # one rollout call, one sampling setting
        if not self.busy:
            self.busy = True
            loop.call_soon(lambda: loop.create_task(self._drain()))  # after the other episodes of this tick ask
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.pending:
                batch, self.pending = self.pending, []
                temperature, top_p = self.sampling or (1.0, 1.0)
                try:
                    outputs = await loop.run_in_executor(
                        self.executor, self.generate_fn, [b[0] for b in batch], [b[1] for b in batch],
                        temperature, top_p, [b[2] for b in batch])
                except Exception as error:
                    for *_, future in batch:
                        future.set_exception(error)
                    continue
                for (*_, future), ids in zip(batch, outputs):
                    future.set_result(ids)
                await asyncio.sleep(0)  # let the answered episodes ask again before the next batch forms
        finally:
            self.busy = False


class BackgroundLoop:
    """An asyncio loop on its own thread, so that blocking callers (a Ray actor method) can run
    coroutines and long-lived async engines keep one loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="kr1-agent-loop", daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def close(self) -> None:
        """Cancel what still runs on the loop (an engine's output handlers), then stop it."""
        if not self.loop.is_running():
            return

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self.run(cancel_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
