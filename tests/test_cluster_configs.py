"""Cluster configs: Ray's own launcher validation, the network and scaling promises, the KubeRay RayJob.

    python -m pytest -q tests/test_cluster_configs.py

Nothing contacts a cloud. Each launcher file goes through the first two steps of `ray up`:
`prepare_config` (merges the provider's defaults.yaml, as `ray up` does, so a start command
left to Ray's defaults would show up here) and `validate_config` (ray-schema.json plus the
head/worker checks). The provider bootstrap that calls AWS or GCP is not run.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from kr1.config import load_config

CLUSTER_DIR = Path(__file__).resolve().parents[1] / "cluster_configs"
LAUNCHERS = ["aws", "gcp", "local"]
CLOUDS = ["aws", "gcp"]
ALL_FILES = [f"{name}.yaml" for name in LAUNCHERS] + ["kuberay_rayjob.yaml"]


def load(file_name: str) -> dict[str, Any]:
    return yaml.safe_load((CLUSTER_DIR / file_name).read_text())


def prepared(name: str) -> dict[str, Any]:
    """The launcher config as `ray up` sees it after merging the provider's defaults."""
    return prepare_config(load(f"{name}.yaml"))


def ray_starts(commands: list[str]) -> list[str]:
    return [c for c in commands if re.search(r"\bray start\b", c)]


def gpu_groups(cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: t for name, t in cfg["available_node_types"].items()
            if name != cfg["head_node_type"] and t["resources"].get("GPU", 0) > 0}


# ---------------------------------------------------------------- launcher files (ray up)

@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_passes_ray_validation(name):
    validate_config(prepared(name))


@pytest.mark.parametrize("name", LAUNCHERS)
def test_dashboard_binds_localhost_only(name):
    cfg = prepared(name)
    head = ray_starts(cfg["head_start_ray_commands"])
    assert len(head) == 1 and "--dashboard-host=127.0.0.1" in head[0]
    for command in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]:
        assert "0.0.0.0" not in command


@pytest.mark.parametrize("name", LAUNCHERS)
def test_token_auth_on_head_and_workers(name):
    """Head and workers start with the same RAY_AUTH_MODE and share one token file."""
    cfg = prepared(name)
    starts = ray_starts(cfg["head_start_ray_commands"]) + ray_starts(cfg["worker_start_ray_commands"])
    assert len(starts) == 2
    for command in starts:
        assert re.search(r"RAY_AUTH_MODE=token ray start\b", command), command
    assert cfg["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"


@pytest.mark.parametrize("name", LAUNCHERS)
def test_setup_installs_kr1(name):
    cfg = prepared(name)
    # after prepare_config, head/worker setups are setup_commands + their own lists
    for commands in (cfg["head_setup_commands"], cfg["worker_setup_commands"]):
        text = "\n".join(commands)
        assert re.search(r"git clone \S+kr1\S*", text)
        assert re.search(r"pip install -e \"\.\[gpu\]\"", text)


@pytest.mark.parametrize("name", CLOUDS)
def test_cloud_head_has_no_gpus(name):
    cfg = prepared(name)
    head = cfg["available_node_types"][cfg["head_node_type"]]
    assert head["resources"].get("GPU") == 0
    assert "--num-gpus=0" in ray_starts(cfg["head_start_ray_commands"])[0]


@pytest.mark.parametrize("name", CLOUDS)
def test_gpu_groups_scale_from_zero(name):
    cfg = prepared(name)
    groups = gpu_groups(cfg)
    assert len(groups) >= 2
    for group in groups.values():
        assert group["min_workers"] == 0 < group["max_workers"] <= cfg["max_workers"]
    # one node of the largest group holds the whole colocated 7B recipe
    recipe = load_config("2wiki_qwen2.5_7b_instruct")
    assert max(g["resources"]["GPU"] for g in groups.values()) >= recipe.learner.num_workers


def test_aws_security_group_adds_no_inbound_rules():
    """Ray's group admits SSH and intra-cluster traffic; nothing else may be added (no 8265, no 6379)."""
    assert load("aws.yaml")["provider"]["security_group"]["IpPermissions"] == []


# ---------------------------------------------------------------- KubeRay RayJob

@pytest.fixture(scope="module")
def rayjob() -> dict[str, Any]:
    return load("kuberay_rayjob.yaml")


def test_rayjob_runs_the_kr1_driver(rayjob):
    assert rayjob["apiVersion"] == "ray.io/v1" and rayjob["kind"] == "RayJob"
    argv = shlex.split(rayjob["spec"]["entrypoint"])
    assert argv[:5] == ["python", "-m", "kr1.driver", "--config", "2wiki_qwen2.5_7b_instruct"]
    load_config(argv[4], argv[5:])  # the overrides are valid kr1 config keys
    assert rayjob["spec"]["shutdownAfterJobFinishes"] is True
    assert isinstance(rayjob["spec"]["ttlSecondsAfterFinished"], int)


def test_rayjob_cluster_autoscales_gpu_workers(rayjob):
    cluster = rayjob["spec"]["rayClusterSpec"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["authOptions"]["mode"] == "token"
    gpu = [g for g in cluster["workerGroupSpecs"]
           if g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu", 0) > 0]
    assert len(gpu) == 1
    group = gpu[0]
    assert group["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 8
    assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"] and group["maxReplicas"] > 0


def test_rayjob_head_is_cpu_only_and_internal(rayjob):
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0"
    assert "nvidia.com/gpu" not in head["template"]["spec"]["containers"][0]["resources"]["limits"]
    service_types = {head.get("serviceType", "ClusterIP"), head.get("headService", {}).get("spec", {}).get("type")}
    assert not service_types & {"LoadBalancer", "NodePort"}


# ---------------------------------------------------------------- every key commented

KEY_LINE = re.compile(r"""^\s*(?:-\s+)?(?:"[^"]*"|'[^']*'|[^\s#'"-][^#]*?)\s*:(?:\s|$)""")
BLOCK_SCALAR = re.compile(r":\s*[|>][-+0-9]*\s*(?:#.*)?$|^\s*-\s+[|>][-+0-9]*\s*(?:#.*)?$")


def uncommented_keys(text: str) -> list[str]:
    """Key lines that neither end with `# ...` nor follow a comment line (block scalars skipped)."""
    missing, previous, block_indent = [], "", None
    for number, line in enumerate(text.splitlines(), 1):
        indent = len(line) - len(line.lstrip())
        if block_indent is not None:
            if not line.strip() or indent > block_indent:
                previous = line
                continue
            block_indent = None
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and KEY_LINE.match(line):
            if not re.search(r"\s#\s*\S", line) and not previous.strip().startswith("#"):
                missing.append(f"{number}: {stripped}")
        if BLOCK_SCALAR.search(line):
            block_indent = indent
        previous = line
    return missing


@pytest.mark.parametrize("file_name", ALL_FILES)
def test_every_key_is_commented(file_name):
    assert uncommented_keys((CLUSTER_DIR / file_name).read_text()) == []


def test_comment_lint_flags_a_bare_key():
    assert uncommented_keys("# fine\na: 1\nb: 2  # fine\nc:\n  # fine\n  d: >-\n    e: not a key\n") == ["4: c:"]


def test_the_grafana_dashboard_plots_every_gauge_kr1_exports():
    import json

    from kr1.run.ray_metrics import HEADLINE

    dashboard = json.loads((Path(__file__).resolve().parents[1] / "cluster_configs" / "grafana_kr1.json").read_text())
    queries = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for name in [n for n, _ in HEADLINE.values()] + ["kr1_step", "kr1_phase_share"]:
        assert f'ray_{name}{{run=~"$run"}}' in queries, name
