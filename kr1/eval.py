"""Evaluate a model on a question split: EM, F1, turns, searches, response length, invalid actions.

    python -m kr1.eval                                      # embedded default, dev split
    python -m kr1.eval --config default model.path=runs/default/checkpoints/step_30/policy data.split=test
    python -m kr1.eval --config 2wiki_qwen2.5_1.5b_instruct --limit 500 --out eval.jsonl

Episodes are played greedily (one per question) through the rollout engines and the
retriever pool. Prints a table and writes every trajectory as JSONL (default:
`<trainer.output_dir>/eval_<split>.jsonl`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from kr1.assets import resolve_assets
from kr1.atomic_write import write_jsonl
from kr1.config import Config, expand_path, load_config
from kr1.data import QARecord, load_questions
from kr1.metrics import episode_metrics, metrics_table
from kr1.ray_runtime import ensure_ray
from kr1.rewards import EpisodeScores, reward_weights, score_episodes


def trajectory_rows(episodes: Sequence[Any], questions: Sequence[QARecord], scores: EpisodeScores) -> list[dict]:
    """One JSON-ready row per episode: what was asked, searched, read and answered."""
    by_id = {q.id: q for q in questions}
    rows = []
    for i, e in enumerate(episodes):
        q = by_id[e.question_id]
        rows.append({
            "question_id": q.id, "type": q.type, "question": q.problem, "golden_answers": q.golden_answers,
            "answer": e.answer, "em": float(scores.em[i]), "f1": float(scores.f1[i]), "reward": float(scores.rewards[i]),
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


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="default", help="bundled config name or YAML path")
    parser.add_argument("--limit", type=int, help="evaluate only the first N questions")
    parser.add_argument("--out", type=Path, help="trajectories JSONL (default: <output_dir>/eval_<split>.jsonl)")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    assets = resolve_assets(cfg)
    questions = load_questions(assets.split_path(cfg.data.split))[:args.limit]

    from actors.retriever import RetrieverPool
    from actors.rollout_engine import RolloutEnginePool

    ensure_ray(cfg.cluster.address, cfg.cluster.num_cpus, cfg.cluster.dashboard_host)
    retriever = RetrieverPool.from_config(cfg.retriever, assets.index_dir)
    engines = RolloutEnginePool(cfg, assets.model_path, retriever)
    start = time.perf_counter()
    metrics, rows = evaluate(cfg, questions, engines)
    out = args.out or expand_path(cfg.trainer.output_dir) / f"eval_{cfg.data.split}.jsonl"
    write_jsonl(out, rows)
    print(metrics_table({Path(assets.model_path).name: metrics}))
    print(f"{len(questions)} {cfg.data.split} questions in {time.perf_counter() - start:.1f}s; "
          f"trajectories in {out}", file=sys.stderr)


if __name__ == "__main__":
    from kr1.cli_errors import run_cli

    run_cli(main)
