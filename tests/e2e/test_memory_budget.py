"""`--memory-budget` with a real server and worker processes: models load on their first
request, the least recently used idle one is unloaded to make room (its worker exits), the index,
/metrics and /stats say so, and memory stays within the budget plus one model."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import httpx
import psutil
import pytest
import tritonclient.http as triton

from serving import Server, metric_samples

MEASURE = """
import psutil
from dlproxy.models.registry import create_model
import dlproxy.worker.main
model = create_model("echo")
model.load()
print(psutil.Process().memory_info().rss)
"""


def echo_worker_bytes() -> int:
    """About what one echo worker holds: a process that imported and loaded what it does."""
    out = subprocess.run(
        [sys.executable, "-c", MEASURE], capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip())


@pytest.fixture(scope="module")
def budget() -> int:
    return int(echo_worker_bytes() * 2.5)  # room for two echo workers, not three


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, budget: int) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("budgeted")
    for name in ("a", "b", "c"):
        folder = root / name / "1"
        folder.mkdir(parents=True)
        (folder / "model.json").write_text(json.dumps({"model": "echo"}))
    log = tmp_path_factory.mktemp("budget-server") / "server.log"
    running = Server(
        "--admin-loopback",
        *("--model-repository", str(root), "--memory-budget", str(budget)),
        *("--instances", "1", "--threads", "1"),
        log=log,
    )
    yield running.wait_ready()
    assert running.stop(timeout=20) == 0


def infer(server: Server, model: str) -> httpx.Response:
    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "INT64", "data": [3]}]}
    return httpx.post(f"{server.url}/v2/models/{model}/infer", json=body, timeout=60)


def ready(server: Server) -> set[str]:
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    return {row["name"] for row in client.get_model_repository_index() if row["state"] == "READY"}


def worker_pids(server: Server) -> dict[str, int]:
    rows = httpx.get(f"{server.url}/admin/instances", timeout=10).json()
    return {row["model"]: row["pid"] for row in rows}


def test_models_load_on_demand_and_the_least_recently_used_makes_room(
    server: Server, budget: int
) -> None:
    assert ready(server) == set()  # nothing is loaded before it is asked for
    for name in ("a", "b", "a"):
        answer = infer(server, name)
        assert answer.status_code == 200 and answer.json()["outputs"][0]["data"] == [3]
    assert ready(server) == {"a", "b"}
    b_worker = worker_pids(server)["b"]
    cold = infer(server, "c")  # b is the least recently used: it goes
    assert cold.status_code == 200 and float(cold.headers["x-dlproxy-load-wait-ms"]) > 0
    assert "x-dlproxy-load-wait-ms" not in infer(server, "c").headers  # loaded: no wait
    assert ready(server) == {"a", "c"}
    assert not psutil.pid_exists(b_worker) or psutil.Process(b_worker).status() == "zombie"
    figures = httpx.get(f"{server.url}/stats", timeout=10).json()["lifecycle"]
    assert figures["memory_budget_bytes"] == budget
    assert figures["memory_bytes"] <= budget
    assert figures["events"]["b/unload/evicted"] == 1
    assert figures["events"]["c/load/request"] == 1
    assert figures["load_waits"]["c"]["requests"] == 1
    samples = metric_samples(f"{server.url}/metrics")
    assert samples["dlproxy_model_unloads_total", (("model", "b"), ("reason", "evicted"))] == 1
    assert samples["dlproxy_model_loads_total", (("model", "c"), ("reason", "request"))] == 1
    assert samples["dlproxy_memory_budget_bytes", ()] == budget


def test_unknown_models_are_404_and_a_budget_needs_a_repository(server: Server) -> None:
    missing = infer(server, "nope")
    assert missing.status_code == 404 and "not served here" in missing.json()["error"]
    refused = subprocess.run(
        [sys.executable, "-m", "dlproxy", "serve", "--memory-budget", "1GiB", "--model", "echo"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0 and "memory_budget needs a model repository" in (
        refused.stdout + refused.stderr
    )
    assert "Traceback" not in refused.stderr
