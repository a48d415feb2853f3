"""The monitoring pack against a real Prometheus (Debian's `prometheus`, started here on a free
port) scraping a running dlproxy under a little load: the alert rules pass `promtool check
rules` and load, and every PromQL expression of the Grafana dashboard and of the rules (the
left-hand side of a rule's comparison) returns data. Also: docs/metrics.md is up to date."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from dlproxy import metrics
from dlproxy.console import free_port
from serving import Server

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "deploy" / "monitoring"
COMPARISON = re.compile(r"^(?P<lhs>.*\S)\s*(==|!=|>=|<=|>|<)\s*[-+\d.e]+\s*$", re.DOTALL)


def test_the_metrics_reference_is_up_to_date() -> None:
    assert (REPO / "docs" / "metrics.md").read_text() == metrics.reference(), (
        "docs/metrics.md is stale: run `python -m dlproxy.metrics > docs/metrics.md`"
    )


def dashboard_expressions() -> list[str]:
    board = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    return [target["expr"] for panel in board["panels"] for target in panel["targets"]]


def rule_expressions() -> list[str]:
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    found = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            match = COMPARISON.match(rule["expr"])
            found.append(match["lhs"] if match else rule["expr"])
    return found


def test_promtool_accepts_the_rules() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool comes with the prometheus package (scripts/test.sh installs it)"
    done = subprocess.run(
        [promtool, "check", "rules", str(MONITORING / "alerts.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A dlproxy under load, scraped every second by a real Prometheus; yields its URL."""
    folder = tmp_path_factory.mktemp("prometheus")
    server = Server(
        *("--model", "echo", "--instances", "1", "--threads", "1", "--cache", "lru"),
        log=folder / "dlproxy.log",
    ).wait_ready()
    port = free_port()
    shutil.copy(MONITORING / "alerts.yml", folder / "alerts.yml")
    (folder / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": ["alerts.yml"],
                "scrape_configs": [
                    {
                        "job_name": "dlproxy",
                        "static_configs": [{"targets": [f"127.0.0.1:{server.port}"]}],
                    }
                ],
            }
        )
    )
    prometheus = subprocess.Popen(
        [
            shutil.which("prometheus") or "prometheus",
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(folder / "prometheus.log").open("wb"),
    )
    url = f"http://127.0.0.1:{port}"
    stop = threading.Event()

    def load() -> None:  # a little traffic: computed items, cache hits, a 400
        with httpx.Client(timeout=10) as http:
            n = 0
            while not stop.is_set():
                body = {
                    "inputs": [{"name": "x", "shape": [1], "datatype": "INT64", "data": [n % 7]}]
                }
                http.post(f"{server.url}/v2/models/echo/infer", json=body)
                if n % 20 == 0:
                    http.post(f"{server.url}/v2/models/echo/infer", content=b"{broken")
                n += 1
                time.sleep(0.01)

    loader = threading.Thread(target=load)
    loader.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        # Several scrapes of traffic (rates over [1m] need two samples); a loaded machine may
        # delay the first scrapes, so wait for them rather than for a fixed time.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if query(url, "count_over_time(up[1m]) >= 4") and query(
                    url, "rate(dlproxy_request_duration_seconds_count[1m]) > 0"
                ):
                    break
            except (httpx.HTTPError, AssertionError):
                pass
            time.sleep(0.5)
        time.sleep(2)
        yield url
    finally:
        stop.set()
        loader.join(10)
        prometheus.terminate()
        prometheus.wait(30)
        server.stop()


def query(url: str, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", f"{expr}: {answer}"
    return list(answer["data"]["result"])


def test_prometheus_scrapes_dlproxy_and_loads_the_rules(scraped: str) -> None:
    (target,) = httpx.get(f"{scraped}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
    assert target["health"] == "up", target
    groups = httpx.get(f"{scraped}/api/v1/rules", timeout=10).json()["data"]["groups"]
    assert len(groups[0]["rules"]) == len(rule_expressions())
    assert all(rule["health"] == "ok" for rule in groups[0]["rules"]), groups


@pytest.mark.parametrize("source", ["dashboard", "rules"])
def test_every_expression_returns_data(scraped: str, source: str) -> None:
    expressions = dashboard_expressions() if source == "dashboard" else rule_expressions()
    empty = [expr for expr in expressions if not query(scraped, expr)]
    assert not empty, f"no data for: {empty}"
