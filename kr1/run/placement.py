"""Where each role's actors run: Ray placement groups, one per role, or one shared when colocated.

    placement = Placement(cfg)                  # reserves the bundles (waits until they fit)
    options = placement.options_for("learner")  # per-actor .options(): bundle, CPUs, GPUs

CPU (the embedded default): every learner, engine and reference worker gets a bundle
of one CPU. GPU, separate pools: learners get one GPU each, engines `tensor_parallel_size`
GPUs each, in their own groups. GPU, colocated (`cluster.colocate`, the hybrid engine):
one group of `learner.num_workers` GPU bundles holds learner i, the colocated reference,
and the engine whose GPUs include bundle i, sharing the GPU by fractions, so vLLM
sleeps while the learner trains.
"""

from __future__ import annotations

from typing import Any

import ray
from ray.util.placement_group import placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from kr1.config import Config

# GPU shares when roles colocate on one device; they alternate, so the fractions only place them
COLOCATED_SHARE = {"learner": 0.4, "engine": 0.4, "reference": 0.2}


class Placement:
    """Placement groups for the learner, rollout engine and reference roles."""

    def __init__(self, cfg: Config, timeout_s: float = 600.0) -> None:
        self.cfg = cfg
        self.gpu = cfg.cluster.gpus_per_node > 0
        strategy = cfg.cluster.placement_strategy
        n_learn, n_eng, tp = cfg.learner.num_workers, cfg.rollout.num_engines, cfg.rollout.tensor_parallel_size
        self.groups: dict[str, Any] = {}
        if self.gpu and cfg.cluster.colocate:
            if n_eng * tp != n_learn:
                raise ValueError(f"colocation needs rollout.num_engines x tensor_parallel_size ({n_eng} x {tp}) "
                                 f"= learner.num_workers ({n_learn}) GPUs")
            self.groups["shared"] = placement_group([{"GPU": 1, "CPU": 2}] * n_learn, strategy=strategy)
        elif self.gpu:
            self.groups["learner"] = placement_group([{"GPU": 1, "CPU": 1}] * n_learn, strategy=strategy)
            self.groups["engine"] = placement_group([{"GPU": 1, "CPU": 1}] * (n_eng * tp), strategy=strategy)
        else:
            self.groups["learner"] = placement_group([{"CPU": 1}] * n_learn, strategy=strategy)
            self.groups["engine"] = placement_group([{"CPU": 1}] * n_eng, strategy=strategy)
        if cfg.reference.placement == "separate":
            bundle = {"GPU": 1, "CPU": 1} if self.gpu else {"CPU": 1}
            self.groups["reference"] = placement_group([bundle] * cfg.reference.num_workers, strategy=strategy)
        ready = [g.ready() for g in self.groups.values()]
        done, _ = ray.wait(ready, num_returns=len(ready), timeout=timeout_s)
        if len(done) < len(ready):
            raise RuntimeError(f"the cluster cannot fit the placement groups {list(self.groups)} within "
                               f"{timeout_s:.0f}s; lower learner.num_workers / rollout.num_engines or add nodes")

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
