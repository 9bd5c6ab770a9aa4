"""What the Ray cluster can grow to: the most CPUs and GPUs its autoscaler may bring, and where that was read.

    capacity = read_cluster_capacity(cfg.cluster.autoscaling)   # ClusterCapacity(most, source)
    capacity.line()            # "cluster: can grow to 8 CPUs, 0 GPUs (from ...)", printed once by the driver
    autoscaler_activity()      # "the autoscaler is launching 1 x ray.worker.cpu", for the placement wait reports

Ray keeps the answer in different places on different clusters; they are tried in this order:
1. the cluster config in the GCS (where an autoscaler reports it);
2. the autoscaling config the head's autoscaler runs with (`ray start --head --autoscaling-config=FILE`, the v1 and
   the v2 autoscaler; on a cluster-launcher head that is `~/ray_bootstrap_config.yaml`), read from its process;
3. the launcher's bootstrap config in the home directory, where the autoscaler's process is not visible;
4. on a KubeRay head (RAY_CLUSTER_NAME set by the operator), the RayCluster resource, read as Ray's own KubeRay
   autoscaler reads it.
None found: no autoscaler, the cluster is what it is now. A source that is there but cannot be read (a malformed
config file, a Ray whose private API moved, a RayCluster the head may not read) is not taken as absent: the capacity
line and a refusal name it and its error, so that "no autoscaler" is never a guess.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

INF = float("inf")
BOOTSTRAP_CONFIG = Path("~/ray_bootstrap_config.yaml")  # where `ray up` puts the config on the head
K8S_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
KINDS = ("CPU", "GPU")


@dataclass(frozen=True)
class ClusterCapacity:
    """The most CPUs and GPUs the cluster can grow to (None: it cannot grow, no autoscaler found) and the source."""

    most: dict[str, float] | None
    source: str
    unreadable: tuple[str, ...] = ()  # sources found but not read, each with its error

    @property
    def where(self) -> str:
        """Where the answer came from, and every source that was there but could not be read."""
        return self.source + "".join(f"; could not read {u}" for u in self.unreadable)

    def line(self) -> str:
        if self.most is None:
            found = "no readable autoscaler config" if self.unreadable else "no autoscaler found"
            return f"cluster: {found} ({self.where}): the run must fit the nodes there are"
        size = ", ".join(f"{_count(self.most.get(k, 0.0))} {k}s" for k in KINDS)
        return f"cluster: can grow to {size} ({self.where})"


def _count(x: float) -> str:
    return "unbounded" if math.isinf(x) else f"{x:g}"


def capacity_from_autoscaling_config(config: dict[str, Any], source: str) -> ClusterCapacity:
    """The most each node type may add (its `resources` x `max_workers`, the head once), within the config's global
    `max_workers`. A node type that lists no resources (a cloud type the autoscaler sizes itself) may bring any."""
    types: dict[str, Any] = config.get("available_node_types") or {}
    head = config.get("head_node_type")
    cap = config.get("max_workers")
    most: dict[str, float] = {}
    for kind in KINDS:
        total = float((types.get(head) or {}).get("resources", {}).get(kind, 0) or 0)
        workers = [(spec or {}) for name, spec in types.items() if name != head and (spec or {}).get("max_workers")]
        if any("resources" not in spec for spec in workers):
            most[kind] = INF
            continue
        left = INF if cap is None else int(cap)
        # the largest nodes first, as many as the global cap lets in
        for size, count in sorted(((float(spec["resources"].get(kind, 0) or 0), int(spec["max_workers"]))
                                   for spec in workers), reverse=True):
            taken = min(count, left)
            total, left = total + taken * size, left - taken
        most[kind] = total
    return ClusterCapacity(most, source)


def capacity_from_ray_cluster_resource(ray_cr: dict[str, Any]) -> ClusterCapacity:
    """A KubeRay RayCluster resource, translated to an autoscaling config by Ray's own KubeRay autoscaler code."""
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr

    name = f"the RayCluster {ray_cr['metadata']['name']} (KubeRay)"
    if not ray_cr["spec"].get("enableInTreeAutoscaling"):
        return ClusterCapacity(None, f"{name}, enableInTreeAutoscaling off")
    return capacity_from_autoscaling_config(_derive_autoscaling_config_from_ray_cr(ray_cr), name)


def _gcs_cluster_config() -> ClusterCapacity | None:
    import ray

    most = ray._private.state.state.get_max_resources_from_cluster_config()
    if not most:
        return None
    return ClusterCapacity({k: float(most.get(k, 0)) for k in KINDS}, "the cluster config in the GCS")


def _monitor_config_path() -> Path | None:
    """The `--autoscaling-config` of this cluster's autoscaler process, when it runs on this node (the head, under
    `ray job submit`); matched by its GCS port, as other Ray clusters may run on the same machine."""
    import psutil
    import ray

    port = ray.get_runtime_context().gcs_address.rsplit(":", 1)[-1]
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if not any(a.endswith(("autoscaler/_private/monitor.py", "autoscaler/v2/monitor.py")) for a in cmdline):
            continue
        if not any(a.startswith("--gcs-address=") and a.rsplit(":", 1)[-1] == port for a in cmdline):
            continue
        for arg in cmdline:
            if arg.startswith("--autoscaling-config="):
                return Path(arg.split("=", 1)[1]).expanduser()
    return None


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())}"


class UnreadableSource(Exception):
    """A source that is there but cannot be read; the message names the file."""


def _config_file(path: Path, source: str) -> ClusterCapacity | None:
    """The capacity an autoscaling config file allows; None where there is no such file."""
    if not path.is_file():
        return None
    try:
        config = yaml.safe_load(path.read_text())
        if not isinstance(config, dict):
            raise ValueError(f"holds a {type(config).__name__}, not an autoscaling config")
        return capacity_from_autoscaling_config(config, f"{source}: {path}")
    except Exception as e:  # noqa: BLE001 (unreadable, not YAML, or not the schema: each named with the file)
        raise UnreadableSource(f"{path}: {_error(e)}") from e


def _kuberay() -> ClusterCapacity | None:
    name = os.environ.get("RAY_CLUSTER_NAME")
    if not name or not K8S_NAMESPACE_FILE.is_file():
        return None
    from ray.autoscaler._private.kuberay.node_provider import KubernetesHttpApiClient

    client = KubernetesHttpApiClient(namespace=K8S_NAMESPACE_FILE.read_text().strip())
    return capacity_from_ray_cluster_resource(client.get(f"rayclusters/{name}"))


def read_cluster_capacity(autoscaling: bool | None = None) -> ClusterCapacity:
    """What the connected cluster can grow to; `autoscaling` (cluster.autoscaling) overrides what Ray says."""
    if autoscaling is False:
        return ClusterCapacity(None, "cluster.autoscaling=false")
    if autoscaling:
        return ClusterCapacity({k: INF for k in KINDS}, "cluster.autoscaling=true")

    head = "the autoscaling config the head was started with"
    bootstrap = "the cluster launcher's bootstrap config"

    def head_config() -> ClusterCapacity | None:
        path = _monitor_config_path()
        return _config_file(path, head) if path else None

    # each reader returns None where its source is absent; what it raises is a source there that cannot be read
    readers = (("the cluster config in the GCS", _gcs_cluster_config), (head, head_config),
               (bootstrap, lambda: _config_file(BOOTSTRAP_CONFIG.expanduser(), bootstrap)),
               ("the KubeRay RayCluster", _kuberay))
    unreadable: list[str] = []
    for name, reader in readers:
        try:
            found = reader()
        except Exception as e:  # noqa: BLE001 (YAML, Ray's private API, Kubernetes' HTTP: named, not guessed)
            unreadable.append(f"{name} ({e if isinstance(e, UnreadableSource) else _error(e)})")
            continue
        if found is not None:
            return ClusterCapacity(found.most, found.source, tuple(unreadable))
    if unreadable:
        return ClusterCapacity(None, "whether this cluster autoscales is unknown: cluster.autoscaling=true if it does, "
                                     "false if not", tuple(unreadable))
    return ClusterCapacity(None, "no autoscaler config in the GCS, on the head, or in a KubeRay RayCluster; "
                                 "cluster.autoscaling=true if this cluster autoscales")


def autoscaler_activity() -> str:
    """What the autoscaler is doing about pending work, in a few words ("" when it says nothing): the nodes it is
    launching, by type, from the v1 autoscaler's status or the v2 autoscaler's cluster status."""
    try:
        from ray._private import ray_constants
        from ray.experimental.internal_kv import _internal_kv_get

        status = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
        if status:  # the v1 autoscaler: launches by type, and nodes as [ip, type, status]
            report = json.loads(status).get("autoscaler_report") or {}
            launching = Counter(report.get("pending_launches") or {})
            launching.update(node[1] for node in report.get("pending_nodes") or [])
        else:  # the v2 autoscaler
            import ray
            from ray.autoscaler.v2.sdk import get_cluster_status

            cluster = get_cluster_status(ray.get_runtime_context().gcs_address)
            launching = Counter()
            for req in cluster.pending_launches:
                launching[req.ray_node_type_name] += req.count
            launching.update(node.ray_node_type_name for node in cluster.pending_nodes)
    except Exception:  # a status Ray changed: the wait report goes on without it
        return ""
    return ("the autoscaler is launching " + ", ".join(f"{n} x {t}" for t, n in sorted(launching.items()))
            if launching else "")
