"""Schemathesis against a live server, driven by its own /openapi.json: examples, boundary
values, schema-violating mutations and random requests for every documented route.

What must hold: no server error (a 504 only when the request itself set X-Request-Timeout-Ms),
every answer matches the document (status, content type, headers, body schema), credentials are
enforced where the document says, and no worker was restarted.

Left out: ``positive_data_acceptance``. An infer body is valid only when its data fills its shape
and matches the model's inputs (and echo answers no embeddings): rules JSON Schema cannot state,
so most schema-valid bodies rightly get a 400.
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving import Server

TOKEN = "adm-schemathesis-4b7e1f"
KEY = "sk-schemathesis-0c93d2"
MAX_EXAMPLES = 100  # per operation and phase
SEED = 20261122

CONFIG = """
[checks.not_a_server_error]
# 504 answers a request whose own X-Request-Timeout-Ms passed; checked separately below.
expected-statuses = ["2xx", "3xx", "4xx", "504"]

[generation]
# Unknown headers and query parameters are ignored by HTTP servers by design, not errors.
allow-extra-parameters = false

[cache]
enabled = false  # nothing written into the checkout
"""

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("schemathesis") / "server.log"
    server = Server(
        "--admin-loopback",
        *("--model", "echo", "--model", "minilm:fp32", "--instances", "1", "--threads", "1"),
        *("--api-key", KEY, "--admin-token", TOKEN),
        log=log,
    ).wait_ready()
    yield server
    server.stop()


def test_schemathesis_finds_no_server_error(server: Server, tmp_path: Path) -> None:
    workers = server.worker_pids()
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    reports = tmp_path / "reports"
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        *("--config-file", str(config), "run", f"{server.url}/openapi.json"),
        *("--checks", "all", "--exclude-checks", "positive_data_acceptance"),
        *("--header", f"Authorization: Bearer {TOKEN}"),  # the admin token opens every route
        # Scaling to random counts (0 instances, or 64) changes what the server can answer: it
        # has its own tests (test_scaling.py).
        *("--exclude-path", "/admin/models/{model}/scale"),
        *("--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED), "--workers", "1"),
        *("--generation-database", "none", "--request-timeout", "30"),
        *("--report", "json,har", "--report-dir", str(reports), "--no-color"),
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    summary = json.loads(next(reports.glob("json-*.json")).read_text())
    entries = json.loads(next(reports.glob("har-*.json")).read_text())["log"]["entries"]
    statuses = collections.Counter(entry["response"]["status"] for entry in entries)
    cases = summary["test_cases"]
    print(
        f"schemathesis: {cases['generated']} cases, {len(entries)} requests, statuses {dict(sorted(statuses.items()))}"
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert cases["with_failures"] == 0 and cases["errored"] == 0
    assert cases["generated"] > 14 * MAX_EXAMPLES // 2
    for entry in entries:
        status = entry["response"]["status"]
        headers = {h["name"].lower() for h in entry["request"]["headers"]}
        assert status < 500 or (status == 504 and "x-request-timeout-ms" in headers), entry
    assert statuses[200] > 100 and statuses[401] > 0  # requests reached models; auth was probed
    assert server.process.poll() is None
    assert server.worker_pids() == workers
