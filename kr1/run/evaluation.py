"""The evaluation loop: greedy episodes of a question split, scored, as metrics and trajectories.

    metrics, rows = evaluate(cfg, questions, engines)      # inside a training run, on its engines
    result = evaluate_model(cfg, limit=100)                # `python -m kr1.eval`: starts its own pools
    results = evaluate_benchmarks(cfg, "data/benchmarks", ["nq", "hotpotqa"], models=["a", "b"])

One episode per question, played greedily through the rollout engines and the retriever
pool; metrics are those of `kr1.run.metrics.episode_metrics` plus EM per question type and
the number of questions. Benchmarks (written by `pipelines.prepare_benchmarks`) share one
retriever; each model gets its own engines and plays every benchmark's questions in one batch.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from kr1.benchmarks import EVAL_SPLITS, MANIFEST
from kr1.cluster import ensure_ray
from kr1.config import Config, ConfigError
from kr1.data import DataError, QARecord, load_questions
from kr1.rollout.rewards import EpisodeScores, score_episodes
from kr1.run.assets import resolve_assets, resolve_model_path
from kr1.run.metrics import episode_metrics, type_metrics
from kr1.run.pools import start_engines, start_index_pool, start_retriever


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
            "retrieved_titles": e.retrieved_titles,
            "generated_tokens": e.generated_tokens, "response": e.response_text,
        })
    return rows


def evaluate(cfg: Config, questions: Sequence[QARecord], engines: Any,
             retriever: Any = None) -> tuple[dict[str, float], list[dict]]:
    """Greedy episodes for `questions` through an engine pool (searching `retriever` instead of the engines'
    own when given: the closed-book evaluation); (metrics, trajectory rows)."""
    return evaluate_groups(cfg, {"": questions}, engines, retriever)[""]


def evaluate_groups(cfg: Config, groups: Mapping[str, Sequence[QARecord]], engines: Any,
                    retriever: Any = None) -> dict[str, tuple[dict[str, float], list[dict]]]:
    """Every group's questions played in one batch (ids unique across groups), scored per group."""
    questions = [q for group in groups.values() for q in group]
    if len({q.id for q in questions}) < len(questions):
        raise DataError(f"question ids repeat across {', '.join(groups)} "
                        "(prepare them with pipelines.prepare_benchmarks)")
    episodes = engines.rollout(questions, n_samples=1, greedy=True, retriever=retriever)
    by_id = {e.question_id: e for e in episodes}
    weights = cfg.reward.effective_weights()
    out = {}
    for name, group in groups.items():
        picked = [by_id[q.id] for q in group]
        scores = score_episodes(picked, {q.id: q.golden_answers for q in group}, weights,
                                {q.id: q.supporting_titles for q in group}, {q.id: q.dataset for q in group})
        metrics = {**episode_metrics(picked, scores), "n": float(len(group)),
                   **type_metrics(picked, [q.type for q in group], scores)}
        out[name] = (metrics, trajectory_rows(picked, group, scores))
    return out


def evaluate_closed_book(cfg: Config, questions: Sequence[QARecord], engines: Any,
                         decoy_index: str | Path) -> tuple[dict[str, float], list[dict]]:
    """`evaluate` with every search answered from `decoy_index` (passages that cannot answer these questions):
    EM when retrieval cannot help."""
    # no CPU reserved: it serves only while the run's own retriever waits, and a full cluster would never place it
    decoy = start_index_pool(cfg.retriever, decoy_index, num_cpus_per_shard=0, any_shards=True)  # local, also with http
    try:
        return evaluate(cfg, questions, engines, decoy)
    finally:
        decoy.close()


@dataclass
class ModelEvaluation:
    """One model on one split: its table row, every trajectory, and how long it took."""

    model: str  # the model's directory name or hub id
    split: str  # the question split, or the benchmark's name
    metrics: dict[str, float]
    rows: list[dict]
    seconds: float


def evaluate_model(cfg: Config, limit: int | None = None, decoy: str | None = None) -> list[ModelEvaluation]:
    """Find the inputs, start a retriever and engine pool for `model.path`, and evaluate `data.split`; with
    `decoy` ("auto": retriever.decoy_index_dir or another seed's world; else an index directory), a second
    evaluation searches that index instead (the closed-book row, its split named "<split> (decoy index)")."""
    if decoy not in (None, "auto"):
        cfg = replace(cfg, retriever=replace(cfg.retriever, decoy_index_dir=decoy))
    assets = resolve_assets(cfg, decoy=decoy is not None)
    if decoy is not None and assets.decoy_index_dir is None:
        raise ConfigError("--index-decoy: no decoy index for these questions (set retriever.decoy_index_dir, or "
                          "give the index directory: --index-decoy DIR)")
    questions = assets.questions(cfg.data.split)[:limit]
    ensure_ray(cfg.cluster.address, cfg.cluster.num_cpus, cfg.cluster.dashboard_host)
    retriever = start_retriever(cfg.retriever, assets.index_dir)
    engines = start_engines(cfg, assets.model_path, retriever)
    name = Path(assets.model_path).name
    results = []
    try:
        start = time.perf_counter()
        metrics, rows = evaluate(cfg, questions, engines)
        results.append(ModelEvaluation(name, cfg.data.split, metrics, rows, time.perf_counter() - start))
        if assets.decoy_index_dir is not None:
            start = time.perf_counter()
            metrics, rows = evaluate_closed_book(cfg, questions, engines, assets.decoy_index_dir)
            results.append(ModelEvaluation(name, f"{cfg.data.split} (decoy index)", metrics, rows,
                                           time.perf_counter() - start))
    finally:
        engines.close()
        retriever.close()
    return results


def benchmark_paths(benchmark_dir: str | Path, names: Sequence[str]) -> dict[str, Path]:
    """The evaluation split's file of each named benchmark (["all"]: the seven) in a directory
    `pipelines.prepare_benchmarks` wrote."""
    root = Path(benchmark_dir)
    names = list(EVAL_SPLITS) if list(names) == ["all"] else names
    manifest = root / MANIFEST
    if not manifest.is_file():
        raise DataError(f"{manifest}: not found (write it with python -m pipelines.prepare_benchmarks --out {root})")
    prepared = json.loads(manifest.read_text())["benchmarks"]
    paths = {}
    for name in names:
        if name not in EVAL_SPLITS:
            raise DataError(f"unknown benchmark {name!r} (known: {', '.join(EVAL_SPLITS)})")
        split = EVAL_SPLITS[name]
        if split not in prepared.get(name, {}).get("counts", {}):
            raise DataError(f"{manifest}: benchmark {name!r} ({split} split) was not prepared here")
        paths[name] = root / name / f"{split}.parquet"
    return paths


def model_labels(models: Sequence[str]) -> list[str]:
    """Short distinct names for model paths: the last path component, or as many as tell them apart."""
    for depth in range(1, max(len(Path(m).parts) for m in models) + 1):
        labels = ["/".join(Path(m).parts[-depth:]) for m in models]
        if len(set(labels)) == len(labels):
            return labels
    return list(models)


def evaluate_benchmarks(cfg: Config, benchmark_dir: str | Path, names: Sequence[str],
                        models: Sequence[str] = (), limit: int | None = None) -> list[ModelEvaluation]:
    """Each model (default: `model.path`) on the first `limit` questions of each benchmark, one retriever for
    all; a ModelEvaluation per (model, benchmark), in model then benchmark order."""
    groups = {name: load_questions(path)[:limit] for name, path in benchmark_paths(benchmark_dir, names).items()}
    assets = resolve_assets(cfg)
    paths = [resolve_model_path(m, cfg.model.gguf_file, key="--models") for m in models] or [assets.model_path]
    ensure_ray(cfg.cluster.address, cfg.cluster.num_cpus, cfg.cluster.dashboard_host)
    retriever = start_retriever(cfg.retriever, assets.index_dir)
    results = []
    try:
        for path, label in zip(paths, model_labels(paths)):
            engines = start_engines(cfg, path, retriever)
            try:
                start = time.perf_counter()
                played = evaluate_groups(cfg, groups, engines)
                seconds = time.perf_counter() - start
            finally:
                engines.close()
            results += [ModelEvaluation(label, name, metrics, rows, seconds)
                        for name, (metrics, rows) in played.items()]
    finally:
        retriever.close()
    return results
