"""Where each role's actors run: Ray placement groups, one per role, or one shared when colocated.

    check_cluster_fits(cfg)                     # ClusterTooSmallError when it never can
    placement = Placement(cfg)                  # reserves the bundles (waits until they fit, saying so)
    options = placement.options_for("learner")  # per-actor .options(): bundle, CPUs, GPUs

CPU (the embedded default): every learner, engine and reference worker gets a bundle
of one CPU. GPU, separate pools: learners get one GPU each, engines `tensor_parallel_size`
GPUs each, in their own groups. GPU, colocated (`cluster.colocate`, the hybrid engine):
one group of `learner.num_workers` GPU bundles holds learner i, the colocated reference,
and the engine whose GPUs include bundle i, sharing the GPU by fractions, so vLLM
sleeps while the learner trains.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import ray
from ray.util.placement_group import placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from kr1.config import Config
from kr1.errors import UserError
from kr1.run.cluster_capacity import autoscaler_activity, read_cluster_capacity

# GPU shares when roles colocate on one device; they alternate, so the fractions only place them
COLOCATED_SHARE = {"learner": 0.4, "engine": 0.4, "reference": 0.2}
SCORER_CPUS = 0.1  # the reward scorer actor's share (actors/reward.py)


class ClusterTooSmallError(UserError):
    """The cluster cannot hold the run and cannot grow to (one line: the need, the offer, the fix)."""


def placement_bundles(cfg: Config) -> dict[str, list[dict[str, float]]]:
    """The bundles of each placement group the run reserves (learner, engine, reference, or shared)."""
    gpu, n_learn = cfg.cluster.gpus_per_node > 0, cfg.learner.num_workers
    n_eng, tp = cfg.rollout.num_engines, cfg.rollout.tensor_parallel_size
    groups: dict[str, list[dict[str, float]]] = {}
    if gpu and cfg.cluster.colocate:
        if n_eng * tp != n_learn:
            raise ValueError(f"colocation needs rollout.num_engines x tensor_parallel_size ({n_eng} x {tp}) "
                             f"= learner.num_workers ({n_learn}) GPUs")
        groups["shared"] = [{"GPU": 1, "CPU": 2}] * n_learn
    elif gpu:
        groups["learner"] = [{"GPU": 1, "CPU": 1}] * n_learn
        groups["engine"] = [{"GPU": 1, "CPU": 1}] * (n_eng * tp)
    else:
        groups["learner"] = [{"CPU": 1}] * n_learn
        groups["engine"] = [{"CPU": 1}] * n_eng
    if cfg.reference.placement == "separate":
        groups["reference"] = [{"GPU": 1, "CPU": 1} if gpu else {"CPU": 1}] * cfg.reference.num_workers
    return groups


def resource_needs(cfg: Config) -> dict[str, dict[str, float]]:
    """CPUs and GPUs each part of the run takes: the placement groups, the retriever shards, the scorer."""
    needs = {name: {"CPU": sum(b.get("CPU", 0) for b in bundles), "GPU": sum(b.get("GPU", 0) for b in bundles)}
             for name, bundles in placement_bundles(cfg).items()}
    shards = 0 if cfg.retriever.backend == "http" else cfg.retriever.num_shards  # http: a server elsewhere
    needs["retriever shards"] = {"CPU": shards * cfg.retriever.num_cpus_per_shard, "GPU": 0.0}
    needs["reward scorer"] = {"CPU": SCORER_CPUS, "GPU": 0.0}
    return needs


def _fmt(x: float) -> str:
    return f"{x:g}"


def _brief(resources: dict[str, float]) -> str:
    """CPUs and GPUs free now, without Ray's per-group and per-node bookkeeping resources."""
    return ", ".join(f"{_fmt(resources.get(k, 0.0))} {k}" for k in ("CPU", "GPU"))


def fit_problem(cfg: Config, offered: dict[str, float], most: dict[str, float] | None) -> str | None:
    """Why a cluster offering `offered` (and growing to at most `most`, None: not at all) can never hold the
    run, or None. One line: what is needed, by whom, what the cluster has, and what to change."""
    needs = resource_needs(cfg)
    for kind, knobs in (("CPU", "learner.num_workers, rollout.num_engines, reference.num_workers or "
                                "retriever.num_cpus_per_shard"),
                        ("GPU", "learner.num_workers, rollout.num_engines or rollout.tensor_parallel_size")):
        total = sum(n[kind] for n in needs.values())
        limit = max(offered.get(kind, 0.0), (most or {}).get(kind, 0.0))
        if total > limit + 1e-9:
            parts = ", ".join(f"{name} {_fmt(n[kind])}" for name, n in needs.items() if n[kind])
            local = (f"start the head with more (`ray start --head --num-cpus {max(8, math.ceil(total))}`: Ray's "
                     "CPUs are scheduling slots, and kr1's roles take turns)")
            fix = "add GPU nodes" if kind == "GPU" else local if cfg.cluster.gpus_per_node == 0 else \
                "add nodes, or start them with more --num-cpus"
            if most is not None:  # an autoscaler whose node types cannot reach the need
                fix = f"raise max_workers or the {kind}s of the node types the autoscaler may add"
            grows = "and no autoscaler that can add more" if most is None else f"and can grow to {_fmt(limit)}"
            return (f"the run needs {_fmt(total)} {kind}s ({parts}) but the cluster has {_fmt(offered.get(kind, 0))} "
                    f"{grows}: {fix}, or lower {knobs}")
    return None


def check_cluster_fits(cfg: Config) -> None:
    """Stop at once when the cluster can never hold the run; say what it can grow to, and that it will wait."""
    offered, capacity = ray.cluster_resources(), read_cluster_capacity(cfg.cluster.autoscaling)
    problem = fit_problem(cfg, offered, capacity.most)
    if problem:
        raise ClusterTooSmallError(f"{problem} ({capacity.where})")
    if capacity.most is not None or capacity.unreadable:
        print(capacity.line(), file=sys.stderr, flush=True)
    if fit_problem(cfg, offered, None):
        print("waiting for the autoscaler to add nodes for this run's placement groups", file=sys.stderr, flush=True)


class Placement:
    """Placement groups for the learner, rollout engine and reference roles."""

    def __init__(self, cfg: Config, timeout_s: float | None = None, report_every_s: float = 30.0) -> None:
        self.cfg = cfg
        timeout_s = cfg.cluster.placement_timeout_s if timeout_s is None else timeout_s
        self.gpu = cfg.cluster.gpus_per_node > 0
        bundles = placement_bundles(cfg)
        self.groups: dict[str, Any] = {name: placement_group(b, strategy=cfg.cluster.placement_strategy)
                                       for name, b in bundles.items()}
        pending = {g.ready(): name for name, g in self.groups.items()}
        start = time.monotonic()
        deadline = start + timeout_s
        while pending:
            left = deadline - time.monotonic()
            done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=max(0.0, min(report_every_s, left)))
            for ref in done:
                pending.pop(ref)
            if pending and time.monotonic() >= deadline:
                raise RuntimeError(f"the cluster cannot fit the placement groups {sorted(pending.values())} within "
                                   f"{timeout_s:.0f}s (cluster.placement_timeout_s); lower learner.num_workers / "
                                   f"rollout.num_engines, add nodes, or wait longer")
            if pending:  # a quiet wait looks like a hang: say what for, every report_every_s
                want = "; ".join(f"{name} {len(bundles[name])} x {bundles[name][0]}" for name in pending.values())
                doing = autoscaler_activity()
                print(f"waiting for resources: {want} (cluster now has {_brief(ray.available_resources())}"
                      f"{'; ' + doing if doing else ''})", file=sys.stderr, flush=True)
        if time.monotonic() - start > 1.0:  # nodes came for the run: say how long that took
            print(f"placement groups ready after {time.monotonic() - start:.0f} s", file=sys.stderr, flush=True)

    def options_for(self, role: str) -> list[dict[str, Any]]:
        """`.options()` for each actor of `role` (learner | engine | reference), in rank order.

        A colocated reference has no actors of its own (it lives in the learner workers): [].
        """
        cfg = self.cfg
        if role == "reference" and "reference" not in self.groups:
            return []
        count = {"learner": cfg.learner.num_workers, "engine": cfg.rollout.num_engines,
                 "reference": cfg.reference.num_workers}[role]
        colocated = "shared" in self.groups and role != "reference"
        group = self.groups["shared"] if colocated else self.groups[role]
        # a tensor-parallel engine spans `tp` bundles; vLLM starts its workers on the following ones
        step = cfg.rollout.tensor_parallel_size if role == "engine" and self.gpu else 1
        if not self.gpu:
            cpus, gpus = 1.0, 0.0
        elif colocated:
            cpus, gpus = 0.5, COLOCATED_SHARE[role]
        else:
            cpus, gpus = 1.0, 1.0 if step == 1 else 0.0
        return [self._options(group, i * step, cpus, gpus) for i in range(count)]

    @staticmethod
    def _options(group: Any, bundle: int, cpus: float, gpus: float) -> dict[str, Any]:
        strategy = PlacementGroupSchedulingStrategy(placement_group=group, placement_group_bundle_index=bundle,
                                                    placement_group_capture_child_tasks=True)
        return {"scheduling_strategy": strategy, "num_cpus": cpus, "num_gpus": gpus}

    def close(self) -> None:
        for group in self.groups.values():
            ray.util.remove_placement_group(group)
        self.groups = {}
