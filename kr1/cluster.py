"""Start or join the Ray cluster that kr1's actors and tasks run on; stop and name actors.

Under `ray job submit` (RAY_ADDRESS set) or with `cluster.address`, kr1 joins the
running cluster; otherwise it starts a local one whose dashboard listens on
127.0.0.1 only. Ray's own start-up chatter is kept out of the console.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from typing import Any

import ray

from kr1.errors import UserError, stop_on_sigterm


class ClusterConnectError(UserError, RuntimeError):
    """The driver could not join the Ray cluster (one-line message with the likely fix)."""


AUTH_HINT = ("Ray 2.60 turns on token authentication once ~/.ray/auth_token exists: set RAY_AUTH_MODE the same "
             "way for `ray start`, `ray job submit` and the driver (e.g. RAY_AUTH_MODE=disabled for all three on "
             "a trusted machine, or RAY_AUTH_MODE=token with the cluster's token)")


def ensure_ray(address: str | None = None, num_cpus: int | float | None = None,
               dashboard_host: str = "127.0.0.1", include_dashboard: bool = False) -> None:
    """Initialise Ray once per process; a second call is a no-op."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
        except Exception as e:  # a token mismatch surfaces as a ConnectionError or AuthenticationError
            auth = "auth" in f"{type(e).__name__} {e}".lower() or "token" in str(e).lower()
            reason = "Missing authentication token" if "Authentication" in type(e).__name__ else str(e).split("\n")[0]
            raise ClusterConnectError(f"cannot join the Ray cluster at {address}: {reason}. "
                                      + (AUTH_HINT if auth or isinstance(e, ConnectionError) else "")) from None
        stop_on_sigterm()  # `ray job stop` sends SIGTERM: stop as on Ctrl-C, not with Ray's native stack dump
        return
    # logical CPUs are scheduling tokens: roles that take turns (rollout, update) may share cores
    num_cpus = num_cpus or max(os.cpu_count() or 1, 8)
    # address="local": always a fresh instance, never a stale cluster a `ray start` left behind
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=include_dashboard, dashboard_host=dashboard_host,
             logging_level=logging.WARNING, log_to_driver=True)
    stop_on_sigterm()


def stop_actors(actors: list, timeout_s: float = 10.0) -> None:
    """Let actors exit on their own (no SIGTERM tracebacks at the end of a run), killing any that hang."""
    refs = [a.__ray_terminate__.options(max_task_retries=0).remote() for a in actors]
    if refs:
        ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    for a in actors:
        ray.kill(a)


def get_all(refs: list[Any], fetch: list[bool] | None = None) -> list[Any]:
    """`ray.get` of every ref, raising as soon as one fails: when one rank of a process group dies, the
    others may stay blocked in a collective, and waiting for all of them would never end. A ref whose
    `fetch` is False stays in the object store and is returned as the ref (its error shows where it is used)."""
    fetch = fetch or [True] * len(refs)
    index = {ref: i for i, ref in enumerate(refs)}
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1, fetch_local=False)
        if fetch[index[ready[0]]]:
            ray.get(ready[0])
    return [ray.get(ref) if f else ref for ref, f in zip(refs, fetch)]


def all_alive(actors: list[Any], timeout_s: float = 30.0) -> bool:
    """Whether every actor answers within `timeout_s` (a dead one does not, nor one stuck in a collective
    with a dead peer: both mean its group must be rebuilt)."""
    pending = [a.__ray_call__.remote(lambda self: True) for a in actors]
    deadline = time.monotonic() + timeout_s
    while pending:
        ready, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
        if not ready:
            return False
        try:
            ray.get(ready)
        except ray.exceptions.RayError:
            return False
    return True


def actor_names(role: str, count: int) -> list[str]:
    """Names for a pool's actors, as the Ray dashboard lists them: role, index, and a tag of this pool
    (two pools of one role may live in one cluster, and actor names must be unique)."""
    tag = uuid.uuid4().hex[:6]
    return [f"{role}{i}-{tag}" for i in range(count)]
