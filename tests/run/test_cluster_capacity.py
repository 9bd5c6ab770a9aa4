"""What a cluster can grow to, read from each place Ray keeps it, and the one line that says where."""

from __future__ import annotations

import math

import pytest
import yaml

from kr1.run import cluster_capacity
from kr1.run.cluster_capacity import (capacity_from_autoscaling_config, capacity_from_ray_cluster_resource,
                                      read_cluster_capacity)

# the shape of the autoscaler tests' fake cluster (tests/cluster/): a head of 0 CPUs, one 8-CPU worker at most
FAKE_CLUSTER = {"max_workers": 1, "head_node_type": "ray.head.default",
                "available_node_types": {"ray.head.default": {"resources": {"CPU": 0}, "max_workers": 0},
                                         "ray.worker.cpu": {"resources": {"CPU": 8}, "min_workers": 0,
                                                            "max_workers": 1}}}


def test_an_autoscaling_config_grows_by_each_type_within_the_global_cap():
    assert capacity_from_autoscaling_config(FAKE_CLUSTER, "x").most == {"CPU": 8.0, "GPU": 0.0}
    gpus = {"max_workers": 3, "head_node_type": "head",
            "available_node_types": {"head": {"resources": {"CPU": 4}},
                                     "small": {"resources": {"CPU": 8, "GPU": 1}, "max_workers": 4},
                                     "big": {"resources": {"CPU": 96, "GPU": 8}, "max_workers": 2}}}
    # the largest nodes first, three in all: two of 8 GPUs and one of 1
    assert capacity_from_autoscaling_config(gpus, "x").most == {"CPU": 4 + 96 + 96 + 8, "GPU": 17.0}
    line = capacity_from_autoscaling_config(gpus, "the autoscaling config the head was started with: /c.yaml").line()
    assert line == "cluster: can grow to 204 CPUs, 17 GPUs (the autoscaling config the head was started with: /c.yaml)"
    # a cloud type the autoscaler sizes from its instance type lists no resources: it may bring any
    cloud = {"head_node_type": "head", "available_node_types": {"head": {"resources": {}},
                                                                 "p4d": {"node_config": {}, "max_workers": 2}}}
    most = capacity_from_autoscaling_config(cloud, "x").most
    assert math.isinf(most["CPU"]) and math.isinf(most["GPU"])
    assert "unbounded CPUs" in capacity_from_autoscaling_config(cloud, "x").line()


def _ray_cluster(autoscaling: bool) -> dict:
    def container(cpu: str, gpu: str | None = None) -> dict:
        limits = {"cpu": cpu, "memory": "8Gi", **({"nvidia.com/gpu": gpu} if gpu else {})}
        return {"spec": {"containers": [{"name": "ray", "image": "rayproject/ray", "resources": {"limits": limits}}]}}

    return {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "kr1", "namespace": "ml"},
            "spec": {"enableInTreeAutoscaling": autoscaling,
                     "headGroupSpec": {"rayStartParams": {"num-cpus": "0"}, "template": container("4")},
                     "workerGroupSpecs": [{"groupName": "gpu", "replicas": 0, "minReplicas": 0, "maxReplicas": 2,
                                           "rayStartParams": {}, "template": container("16", "8")}]}}


def test_a_kuberay_ray_cluster_is_read_as_rays_kuberay_autoscaler_reads_it():
    capacity = capacity_from_ray_cluster_resource(_ray_cluster(autoscaling=True))
    assert capacity.most == {"CPU": 32.0, "GPU": 16.0}
    assert capacity.source == "the RayCluster kr1 (KubeRay)"
    assert capacity_from_ray_cluster_resource(_ray_cluster(autoscaling=False)).most is None


def test_the_launchers_bootstrap_config_is_read_on_a_head_without_other_sources(ray_session, tmp_path, monkeypatch):
    """The session's local Ray has no autoscaler: nothing found, unless a launcher's bootstrap config is there."""
    monkeypatch.delenv("RAY_CLUSTER_NAME", raising=False)
    monkeypatch.setattr(cluster_capacity, "BOOTSTRAP_CONFIG", tmp_path / "ray_bootstrap_config.yaml")
    found = read_cluster_capacity()
    assert found.most is None and "cluster.autoscaling=true if this cluster autoscales" in found.source
    (tmp_path / "ray_bootstrap_config.yaml").write_text(yaml.safe_dump(FAKE_CLUSTER))
    found = read_cluster_capacity()
    assert found.most == {"CPU": 8.0, "GPU": 0.0}
    assert found.source == f"the cluster launcher's bootstrap config: {tmp_path / 'ray_bootstrap_config.yaml'}"
    assert read_cluster_capacity(autoscaling=False).line() == \
        "cluster: no autoscaler found (cluster.autoscaling=false): the run must fit the nodes there are"
    assert read_cluster_capacity(autoscaling=True).line() == \
        "cluster: can grow to unbounded CPUs, unbounded GPUs (cluster.autoscaling=true)"


@pytest.mark.parametrize("bad, error", [("[not a mapping]", "ValueError: holds a list, not an autoscaling config"),
                                        (": : :", "ParserError: while parsing a block mapping"),
                                        ("max_workers: many", "ValueError: invalid literal for int()")])
def test_an_unreadable_bootstrap_config_is_named_not_taken_as_absent(ray_session, tmp_path, monkeypatch, bad, error):
    """A malformed config is no proof that the cluster cannot grow: the capacity line (and a refusal, which ends
    with `where`) names the file and its error, and says how to tell kr1 instead."""
    monkeypatch.delenv("RAY_CLUSTER_NAME", raising=False)
    path = tmp_path / "ray_bootstrap_config.yaml"
    monkeypatch.setattr(cluster_capacity, "BOOTSTRAP_CONFIG", path)
    path.write_text(bad + "\n" + yaml.safe_dump({"available_node_types": FAKE_CLUSTER["available_node_types"]})
                    if bad.startswith("max_workers") else bad)
    found = read_cluster_capacity()
    assert found.most is None and len(found.unreadable) == 1
    assert found.unreadable[0].startswith(f"the cluster launcher's bootstrap config ({path}: {error}")
    assert "whether this cluster autoscales is unknown: cluster.autoscaling=true if it does" in found.where
    assert f"could not read the cluster launcher's bootstrap config ({path}: {error}" in found.where
    assert found.line().startswith("cluster: no readable autoscaler config (") and "\n" not in found.line()
