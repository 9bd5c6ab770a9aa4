"""Start or join the Ray cluster that kr1's actors and tasks run on.

Under `ray job submit` (RAY_ADDRESS set) or with `cluster.address`, kr1 joins the
running cluster; otherwise it starts a local one whose dashboard listens on
127.0.0.1 only. Ray's own start-up chatter is kept out of the console.
"""

from __future__ import annotations

import logging
import os

import ray


def ensure_ray(address: str | None = None, num_cpus: int | float | None = None,
               dashboard_host: str = "127.0.0.1", include_dashboard: bool = False) -> None:
    """Initialise Ray once per process; a second call is a no-op."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
        return
    # logical CPUs are scheduling tokens: roles that take turns (rollout, update) may share cores
    num_cpus = num_cpus or max(os.cpu_count() or 1, 8)
    ray.init(num_cpus=num_cpus, include_dashboard=include_dashboard, dashboard_host=dashboard_host,
             logging_level=logging.WARNING, log_to_driver=True)
