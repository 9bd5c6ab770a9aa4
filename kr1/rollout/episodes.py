"""The turn-synchronous multi-turn rollout: generate, parse, search, append, repeat.

    episodes = new_episodes(questions, tokenizer, n_samples=4)
    run_episodes(episodes, generator.generate, pool.search, tokenizer, RolloutSettings.from_config(cfg))

Each turn, every live episode generates together in one call; each segment stops at
`</search>` or `</answer>`. All of the turn's queries go to the retriever in one batch,
and the passages are appended as `<information>` with loss mask 0, so only tokens the
model generated are ever trained on. Episodes that answer leave the batch; `max_turns`
and the token budget end the rest. This is `rollout.mode=turn`, the baseline that
`kr1.rollout.agent_loop` (`rollout.mode=agent`) plays per episode with the same turn functions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from kr1.config import Config
from kr1.data import QARecord
from kr1.retrieval.hits import Hit
from kr1.rollout.protocol import (INVALID_FEEDBACK, format_information, parse_action, prompt_messages,
                                  prompt_token_ids)

GenerateFn = Callable[[Sequence[Sequence[int]], Sequence[int], float, float], list[list[int]]]
SearchFn = Callable[[Sequence[str]], list[list[Hit]]]


@dataclass
class Episode:
    """One question answered by one sample of the policy, turn by turn."""

    question_id: str
    sample: int
    prompt_ids: list[int]
    response_ids: list[int] = field(default_factory=list)  # everything after the prompt
    loss_mask: list[int] = field(default_factory=list)  # per response token: 1 generated, 0 appended by kr1
    # per response token: its log-prob under the engine's sampling distribution (trainer.mode=async; 0 on
    # appended tokens, and on all when the engine does not record them)
    logprobs: list[float] = field(default_factory=list, compare=False)
    actions: list[str] = field(default_factory=list)  # per turn: search | answer | invalid
    turn_starts: list[int] = field(default_factory=list)  # per turn: where its generated tokens begin in response_ids
    queries: list[str] = field(default_factory=list)
    retrieved_ids: list[list[str]] = field(default_factory=list)  # per query, the passage ids read
    retrieved_titles: list[list[str]] = field(default_factory=list)  # per query, those passages' titles
    empty_queries: int = 0  # invalid actions that were <search></search> with nothing inside
    answer: str | None = None
    finish: str = ""  # answer | max_turns | max_tokens
    response_text: str = ""  # the response decoded, for people to read
    # wall seconds of the batched searches this episode waited on, split evenly among their episodes,
    # so the sum over a batch is the rollout's retrieval time (a timing, left out of comparisons)
    search_seconds: float = field(default=0.0, compare=False)
    # agent loop: per search, seconds from asking to reading the hits, and the size of the retriever batch
    search_latencies: list[float] = field(default_factory=list, compare=False)
    search_batch_sizes: list[int] = field(default_factory=list, compare=False)
    search_batch_unique: list[int] = field(default_factory=list, compare=False)  # distinct queries in that batch
    # seconds the engine that played it sat idle between its previous rollout call and this one, weight loads
    # excluded (the same on every episode of the call; trainer.mode=async logs it)
    engine_idle_s: float = field(default=0.0, compare=False)

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)

    @property
    def turns(self) -> int:
        return len(self.actions)

    @property
    def num_searches(self) -> int:
        return self.actions.count("search")

    @property
    def num_invalid(self) -> int:
        return self.actions.count("invalid")

    def turn_states(self) -> list[tuple[tuple[str, str], ...]]:
        """Per turn, the state it acted in as the environment sees it: the actions before it, each its kind and, for
        a search, its query (lower-cased, spaces collapsed). Two episodes of a question in the same state read
        the same passages so far (GiGPO's anchor states, up to the wording of the model's own text)."""
        queries = iter(self.queries)
        taken = [(kind, " ".join(next(queries, "").lower().split()) if kind == "search" else "")
                 for kind in self.actions]
        return [tuple(taken[:k]) for k in range(len(taken))]

    @property
    def generated_tokens(self) -> int:
        return sum(self.loss_mask)

    def append(self, ids: Sequence[int], generated: bool) -> None:
        """Add tokens; generated ones bring their sampling log-probs when the generator gave them."""
        self.response_ids.extend(ids)
        self.loss_mask.extend([int(generated)] * len(ids))
        logprobs = getattr(ids, "logprobs", None) if generated else None
        self.logprobs.extend(logprobs if logprobs is not None else [0.0] * len(ids))


@dataclass(frozen=True)
class RolloutSettings:
    max_turns: int = 4
    max_new_tokens_per_turn: int = 96
    max_total_tokens: int = 1024
    max_passage_chars: int = 600
    temperature: float = 1.0
    top_p: float = 1.0

    @classmethod
    def from_config(cls, cfg: Config, greedy: bool = False) -> "RolloutSettings":
        r = cfg.rollout
        return cls(r.max_turns, r.max_new_tokens_per_turn, r.max_total_tokens, cfg.retriever.max_passage_chars,
                   0.0 if greedy else r.temperature, r.top_p)


def new_episodes(questions: Sequence[QARecord], tokenizer: Any, n_samples: int,
                 template: str = "search_r1") -> list[Episode]:
    """`n_samples` episodes per question, grouped by question (the GRPO group layout)."""
    episodes = []
    for q in questions:
        prompt = prompt_token_ids(tokenizer, q.problem, template)
        episodes.extend(Episode(q.id, s, list(prompt)) for s in range(n_samples))
    return episodes


def prompt_lengths(questions: Sequence[QARecord], tokenizer: Any, template: str = "search_r1",
                   chunk: int = 4096) -> list[int]:
    """Each question's prompt length in tokens, as `new_episodes` builds it: the chat template rendered, then
    tokenized `chunk` prompts per call (a fast tokenizer spreads each call over the machine's cores)."""
    lengths: list[int] = []
    for start in range(0, len(questions), chunk):
        chats = [prompt_messages(q.problem, template) for q in questions[start:start + chunk]]
        texts = tokenizer.apply_chat_template(chats, add_generation_prompt=True, tokenize=False)
        lengths += [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    return lengths


def within_prompt_limit(questions: Sequence[QARecord], tokenizer: Any, template: str,
                        max_tokens: int) -> list[QARecord]:
    """The questions (in order) whose prompt, as `new_episodes` builds it, holds at most `max_tokens` tokens
    (data.max_prompt_tokens)."""
    return [q for q, n in zip(questions, prompt_lengths(questions, tokenizer, template)) if n <= max_tokens]


def encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def take_segment(episode: Episode, ids: Sequence[int], tokenizer: Any, settings: RolloutSettings,
                 last_turn: bool, feedback: Sequence[int]) -> str | None:
    """Append one generated segment and act on it; returns the query to search, if any."""
    episode.turn_starts.append(len(episode.response_ids))
    episode.append(ids, generated=True)
    action = parse_action(tokenizer.decode(ids, skip_special_tokens=False))
    episode.actions.append(action.kind)
    if action.kind == "answer":
        episode.answer, episode.finish = action.content, "answer"
    elif action.kind == "search":
        episode.queries.append(action.content)
        return None if last_turn else action.content
    else:
        episode.empty_queries += int(action.reason == "empty query")
        if not last_turn:
            episode.append(feedback[:settings.max_total_tokens - episode.length], generated=False)
    return None


def take_hits(episode: Episode, hits: Sequence[Hit], tokenizer: Any, settings: RolloutSettings) -> None:
    """Append the passages a search returned as <information> (loss mask 0)."""
    episode.retrieved_ids.append([h.id for h in hits])
    episode.retrieved_titles.append([h.title for h in hits])
    info = format_information([(h.title, h.text) for h in hits], settings.max_passage_chars)
    episode.append(encode(tokenizer, info)[:settings.max_total_tokens - episode.length], generated=False)


def turn_budget(episode: Episode, settings: RolloutSettings) -> int:
    """New tokens the next segment may take; 0 ends the episode (`max_tokens`)."""
    if episode.length >= settings.max_total_tokens:
        episode.finish = episode.finish or "max_tokens"
        return 0
    return min(settings.max_new_tokens_per_turn, settings.max_total_tokens - episode.length)


def close_episode(episode: Episode, tokenizer: Any, settings: RolloutSettings) -> None:
    """Name why an unfinished episode stopped and decode its response for people to read."""
    if not episode.finish:
        episode.finish = "max_tokens" if episode.length >= settings.max_total_tokens else "max_turns"
    episode.response_text = tokenizer.decode(episode.response_ids, skip_special_tokens=False)


def run_episodes(episodes: list[Episode], generate: GenerateFn, search: SearchFn, tokenizer: Any,
                 settings: RolloutSettings) -> list[Episode]:
    """Play every episode to its end, all live ones together each turn; returns `episodes`."""
    feedback = encode(tokenizer, INVALID_FEEDBACK)
    for turn in range(settings.max_turns):
        live = [(e, budget) for e in episodes if not e.finish and (budget := turn_budget(e, settings))]
        if not live:
            break
        outputs = generate([e.prompt_ids + e.response_ids for e, _ in live], [budget for _, budget in live],
                           settings.temperature, settings.top_p)
        searching: list[tuple[Episode, str]] = []
        for (episode, _), ids in zip(live, outputs):
            query = take_segment(episode, ids, tokenizer, settings, turn == settings.max_turns - 1, feedback)
            if query is not None:
                searching.append((episode, query))
        if searching:
            start = time.perf_counter()
            results = search([query for _, query in searching])
            share = (time.perf_counter() - start) / len(searching)
            unique = getattr(results, "unique", len(searching))
            for (episode, _), hits in zip(searching, results):
                episode.search_seconds += share
                episode.search_latencies.append(share * len(searching))
                episode.search_batch_sizes.append(len(searching))
                episode.search_batch_unique.append(unique)
                take_hits(episode, hits, tokenizer, settings)
    for episode in episodes:
        close_episode(episode, tokenizer, settings)
    return episodes
