"""Episode metrics shared by evaluation and training logs, and their console table.

    metrics = episode_metrics(episodes, scores)
    print(metrics_table({"warm start": before, "trained": after}))
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from kr1.rollout.rewards import EpisodeScores

# prefixes of the logged figures that depend on wall-clock time (step phases, tokens/s, the retriever batches that
# formed): they differ between two runs of the same seed, every other figure must match (exact resume)
TIMING_PREFIXES = ("time/", "throughput/", "search/")
# metric key -> column heading, in table order
TABLE_COLUMNS = {
    "em": "EM", "f1": "F1", "turns": "turns", "searches": "searches", "response_tokens": "resp. tokens",
    "invalid_rate": "invalid %", "answered": "answered %",
}
# shown where a row has them: evidence read, EM against a decoy index (closed-book), EM by 2WikiMultihopQA type
OPTIONAL_COLUMNS = {"evidence_recall": "evidence %", "closed_book_em": "closed-book EM",
                    "em_compositional": "EM comp.", "em_inference": "EM infer.", "em_comparison": "EM compar.",
                    "em_bridge_comparison": "EM bridge"}


# the benchmark table's columns (Search-R1's and FlashRAG's figures, and how the agent behaved)
BENCHMARK_COLUMNS = {
    "em": "EM", "f1": "F1", "cover_em": "cover EM", "sub_em": "sub-EM", "searches": "searches", "turns": "turns",
    "response_tokens": "resp. tokens", "invalid_rate": "invalid %", "answered": "answered %", "n": "n",
}


def episode_metrics(episodes: Sequence[Any], scores: EpisodeScores) -> dict[str, float]:
    """Means over episodes; EM/F1 in percent, invalid rate per action, tokens the model generated, how
    queries were written (repeated within an episode, empty) and the supporting passages found."""
    if not episodes:
        return {}
    actions = sum(e.turns for e in episodes)
    generated = np.array([e.generated_tokens for e in episodes], dtype=np.float64)
    queries = sum(len(e.queries) for e in episodes)
    repeated = sum(len(e.queries) - len({" ".join(q.casefold().split()) for q in e.queries}) for e in episodes)
    empty = sum(e.empty_queries for e in episodes)
    evidence = {"evidence_recall": 100.0 * float(np.nanmean(scores.evidence))} \
        if np.isfinite(scores.evidence).any() else {}
    return {**evidence,
        "em": 100.0 * float(scores.em.mean()),
        "f1": 100.0 * float(scores.f1.mean()),
        "cover_em": 100.0 * float(scores.cover_em.mean()),
        "sub_em": 100.0 * float(scores.sub_em.mean()),
        "reward_mean": float(scores.rewards.mean()),
        "reward_std": float(scores.rewards.std()),
        "turns": float(np.mean([e.turns for e in episodes])),
        "searches": float(np.mean([e.num_searches for e in episodes])),
        "response_tokens": float(generated.mean()),
        "response_tokens_max": float(generated.max()),
        "invalid_rate": 100.0 * sum(e.num_invalid for e in episodes) / max(1, actions),
        "answered": 100.0 * float(np.mean([e.answer is not None for e in episodes])),
        "repeated_query_rate": 100.0 * repeated / max(1, queries),
        "empty_query_rate": 100.0 * empty / max(1, queries + empty),
    }


def type_metrics(episodes: Sequence[Any], types: Sequence[str | None], scores: EpisodeScores) -> dict[str, float]:
    """Per question type (where questions carry one): EM and evidence recall in percent, searches per episode
    and the count, as em_<type>, evidence_recall_<type>, searches_<type>, n_<type>."""
    out: dict[str, float] = {}
    kinds = np.array([t or "" for t in types])
    for qtype in sorted(set(kinds) - {""}):
        mask = kinds == qtype
        out[f"em_{qtype}"] = 100.0 * float(scores.em[mask].mean())
        out[f"searches_{qtype}"] = float(np.mean([e.num_searches for e, m in zip(episodes, mask) if m]))
        if np.isfinite(scores.evidence[mask]).any():
            out[f"evidence_recall_{qtype}"] = 100.0 * float(np.nanmean(scores.evidence[mask]))
        out[f"n_{qtype}"] = float(mask.sum())
    return out


def shared_state_rate(episodes: Sequence[Any]) -> float:
    """Of the turns after each episode's first, the percentage taken in a state (the searches before it) that
    another episode of the same question reached too: the turns step-level credit can compare."""
    counts: dict[tuple, int] = {}
    for e in episodes:
        for state in e.turn_states()[1:]:
            counts[(e.question_id, state)] = counts.get((e.question_id, state), 0) + 1
    later = sum(counts.values())
    return 100.0 * sum(n for n in counts.values() if n > 1) / later if later else 0.0


def search_metrics(episodes: Sequence[Any], rollout_seconds: float) -> dict[str, float]:
    """How queries reached the retriever during one rollout: queries per second of rollout wall time, the
    retriever batch each query rode in (mean size), the share of queries that repeated one in their batch
    (searched once for all), and each query's wait from asking to reading its
    passages (p50, p95, in ms)."""
    latencies = np.array([x for e in episodes for x in e.search_latencies], dtype=np.float64)
    if not latencies.size:
        return {}
    sizes = np.array([x for e in episodes for x in e.search_batch_sizes], dtype=np.float64)
    unique = np.array([x for e in episodes for x in e.search_batch_unique], dtype=np.float64)
    # each query's batch searched `unique` of its `size` queries: the share the retriever did not search again
    duplicate_rate = 1.0 - float(np.mean(unique / sizes)) if unique.size == sizes.size else 0.0
    return {"queries_per_s": latencies.size / max(rollout_seconds, 1e-9), "batch_size": float(np.mean(sizes)),
            "duplicate_rate": duplicate_rate,
            "latency_p50_ms": 1000 * float(np.percentile(latencies, 50)),
            "latency_p95_ms": 1000 * float(np.percentile(latencies, 95))}


def metrics_table(rows: Mapping[str, Mapping[str, float]]) -> str:
    """A markdown table: one row per named result, the columns of TABLE_COLUMNS (+ OPTIONAL_COLUMNS present)."""
    columns = dict(TABLE_COLUMNS)
    columns.update({k: v for k, v in OPTIONAL_COLUMNS.items() if any(k in m for m in rows.values())})
    header = "| model | " + " | ".join(columns.values()) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 1)]
    for name, metrics in rows.items():
        cells = [f"{metrics.get(key, float('nan')):.2f}" for key in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# question types whose answer is one of two names the question gives: answering either at random scores 50 %
TWO_CANDIDATE_TYPES = ("comparison", "bridge_comparison")


def type_table(runs: Mapping[str, Mapping[str, float]], closed: Mapping[str, Mapping[str, float]] | None = None
               ) -> str:
    """A markdown table with a row per question type: n, EM of each named run (e.g. start, trained), its
    closed-book EM (`closed`: the same runs evaluated against a decoy index), the guessing floor, searches per
    episode and evidence recall."""
    closed = closed or {}
    types = sorted({k.removeprefix("n_") for m in runs.values() for k in m if k.startswith("n_")})
    label = lambda what, name: f"{what} {name}".strip()  # noqa: E731
    columns = ["type", "n"] + [label("EM", n) for n in runs] + [label("closed-book EM", n) for n in closed] + \
        ["guessing floor"] + [label("searches", n) for n in runs] + [label("evidence recall", n) for n in runs]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    first = next(iter(runs.values()))
    cell = lambda m, key: f"{m[key]:.2f}" if key in m else "-"  # noqa: E731
    for qtype in types:
        row = [qtype, f"{first.get(f'n_{qtype}', 0):.0f}"]
        row += [cell(m, f"em_{qtype}") for m in runs.values()] + [cell(m, f"em_{qtype}") for m in closed.values()]
        row.append("50" if qtype in TWO_CANDIDATE_TYPES else "-")
        row += [cell(m, f"searches_{qtype}") for m in runs.values()]
        row += [cell(m, f"evidence_recall_{qtype}") for m in runs.values()]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def benchmark_table(results: Sequence[tuple[str, str, Mapping[str, float]]]) -> str:
    """A markdown table of (benchmark, model, metrics): a row per benchmark and model, then each model's
    average over benchmarks (unweighted, as Search-R1's table averages; n is the total)."""
    header = "| benchmark | model | " + " | ".join(BENCHMARK_COLUMNS.values()) + " |"
    lines = [header, "|" + "---|" * (len(BENCHMARK_COLUMNS) + 2)]

    def cells(metrics: Mapping[str, float]) -> str:
        return " | ".join(f"{metrics.get(k, float('nan')):.0f}" if k == "n" else f"{metrics.get(k, float('nan')):.2f}"
                          for k in BENCHMARK_COLUMNS)

    models: dict[str, list[Mapping[str, float]]] = {}
    for benchmark in dict.fromkeys(b for b, _, _ in results):
        for name, model, metrics in results:
            if name == benchmark:
                lines.append(f"| {benchmark} | {model} | {cells(metrics)} |")
                models.setdefault(model, []).append(metrics)
    for model, rows in models.items():
        average = {k: float(np.mean([r.get(k, float("nan")) for r in rows])) for k in BENCHMARK_COLUMNS}
        average["n"] = float(sum(r.get("n", 0) for r in rows))
        lines.append(f"| average | {model} | {cells(average)} |")
    return "\n".join(lines)
