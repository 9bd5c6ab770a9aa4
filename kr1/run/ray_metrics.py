"""Each step's headline figures as Ray metrics, so a cluster's Prometheus and Grafana show them beside Ray's own.

    gauges = RunGauges("default")           # one set per run; the run name is the only tag (and phase, per phase)
    gauges.record(step, metrics)            # after each step: the keys below that the step logged

Ray exports them from the driver's node as `ray_kr1_<name>` (Prometheus text on the node's metrics
export port), tagged `run=<trainer.output_dir's name>`; cluster_configs/grafana_kr1.json plots them.
"""

from __future__ import annotations

from typing import Mapping

# logged key -> (gauge name, description)
HEADLINE = {
    "reward/mean": ("kr1_reward", "mean training reward of the step's episodes"),
    "rollout/em": ("kr1_train_em", "exact match of the step's episodes, %"),
    "eval/em": ("kr1_dev_em", "exact match on the dev split at the last evaluation, %"),
    "rollout/searches": ("kr1_searches_per_episode", "searches per episode in the step"),
    "time/step": ("kr1_step_seconds", "wall seconds of the step"),
    "throughput/rollout_tokens_per_s": ("kr1_rollout_tokens_per_s", "generated tokens per second of rollout"),
    "search/queries_per_s": ("kr1_retrieval_queries_per_s", "retriever queries per second of rollout"),
    "search/latency_p95_ms": ("kr1_retrieval_latency_p95_ms", "95th percentile search latency, ms"),
    "train/kl": ("kr1_kl", "KL to the reference per token"),
    "train/entropy": ("kr1_entropy", "policy entropy per token, nats"),
    "async/staleness_mean": ("kr1_staleness", "policy updates between sampler and learner (trainer.mode=async)"),
}


_GAUGES: dict[str, object] = {}  # one Gauge per name and process: every run of a process sets the same ones


def _gauge(name: str, description: str, tag_keys: tuple[str, ...] = ("run",)) -> object:
    from ray.util.metrics import Gauge

    if name not in _GAUGES:
        _GAUGES[name] = Gauge(name, description=description, tag_keys=tag_keys)
    return _GAUGES[name]


class RunGauges:
    def __init__(self, run: str) -> None:
        self.tags = {"run": run}
        self.gauges = {key: _gauge(name, text) for key, (name, text) in HEADLINE.items()}
        self.step = _gauge("kr1_step", "steps done")
        self.phase = _gauge("kr1_phase_share", "share of the step's wall time per phase", ("run", "phase"))

    def record(self, step: int, metrics: Mapping[str, float]) -> None:
        """Set every headline gauge the step logged, the step count and each phase's share of the step."""
        for key, gauge in self.gauges.items():
            if key in metrics:
                gauge.set(float(metrics[key]), tags=self.tags)
        self.step.set(float(step), tags=self.tags)
        total = metrics.get("time/step", 0.0)
        for key, seconds in metrics.items():
            if key.startswith("time/") and key != "time/step" and total > 0:
                self.phase.set(float(seconds) / total, tags={**self.tags, "phase": key.removeprefix("time/")})
