"""The evaluation loop: greedy episodes of a question split, scored, as metrics and trajectories.

    metrics, rows = evaluate(cfg, questions, engines)      # inside a training run, on its engines
    result = evaluate_model(cfg, limit=100)                # `python -m kr1.eval`: starts its own pools

One episode per question, played greedily through the rollout engines and the retriever
pool; metrics are those of `kr1.run.metrics.episode_metrics` plus EM per question type.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from kr1.cluster import ensure_ray
from kr1.config import Config
from kr1.data import QARecord, load_questions
from kr1.rollout.rewards import EpisodeScores, reward_weights, score_episodes
from kr1.run.assets import resolve_assets
from kr1.run.metrics import episode_metrics
from kr1.run.pools import start_engines, start_retriever


def trajectory_rows(episodes: Sequence[Any], questions: Sequence[QARecord], scores: EpisodeScores) -> list[dict]:
    """One JSON-ready row per episode: what was asked, searched, read and answered."""
    by_id = {q.id: q for q in questions}
    rows = []
    for i, e in enumerate(episodes):
        q = by_id[e.question_id]
        rows.append({
            "question_id": q.id, "type": q.type, "question": q.problem, "golden_answers": q.golden_answers,
            "answer": e.answer, "em": float(scores.em[i]), "f1": float(scores.f1[i]),
            "reward": float(scores.rewards[i]),
            "finish": e.finish, "actions": e.actions, "queries": e.queries, "retrieved_ids": e.retrieved_ids,
            "generated_tokens": e.generated_tokens, "response": e.response_text,
        })
    return rows


def evaluate(cfg: Config, questions: Sequence[QARecord], engines: Any) -> tuple[dict[str, float], list[dict]]:
    """Greedy episodes for `questions` through an engine pool; (metrics, trajectory rows)."""
    episodes = engines.rollout(questions, n_samples=1, greedy=True)
    golds = {q.id: q.golden_answers for q in questions}
    scores = score_episodes(episodes, golds, reward_weights(cfg.reward))
    metrics = episode_metrics(episodes, scores)
    types = {q.id: q.type for q in questions}
    for qtype in sorted({t for t in types.values() if t}):
        picked = [i for i, e in enumerate(episodes) if types[e.question_id] == qtype]
        metrics[f"em_{qtype}"] = 100.0 * float(scores.em[picked].mean())
    return metrics, trajectory_rows(episodes, questions, scores)


@dataclass
class ModelEvaluation:
    """One model on one split: its table row, every trajectory, and how long it took."""

    model: str  # the model's directory name or hub id
    split: str
    metrics: dict[str, float]
    rows: list[dict]
    seconds: float


def evaluate_model(cfg: Config, limit: int | None = None) -> ModelEvaluation:
    """Find the inputs, start a retriever and engine pool for `model.path`, and evaluate `data.split`."""
    assets = resolve_assets(cfg)
    questions = load_questions(assets.split_path(cfg.data.split))[:limit]
    ensure_ray(cfg.cluster.address, cfg.cluster.num_cpus, cfg.cluster.dashboard_host)
    retriever = start_retriever(cfg.retriever, assets.index_dir)
    engines = start_engines(cfg, assets.model_path, retriever)
    try:
        start = time.perf_counter()
        metrics, rows = evaluate(cfg, questions, engines)
        seconds = time.perf_counter() - start
    finally:
        engines.close()
        retriever.close()
    return ModelEvaluation(Path(assets.model_path).name, cfg.data.split, metrics, rows, seconds)
