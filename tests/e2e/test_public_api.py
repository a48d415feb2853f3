"""The public Python API with real workers: the worked PythonModel of examples/repository served
with its options (and its close() run at shutdown), and dlproxy.create_app mounted inside a
FastAPI app whose lifespan starts and drains it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import psutil
import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

import dlproxy
from serving import Server

REPO = Path(__file__).resolve().parents[2]
TEXTS = {
    "inputs": [
        {"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a Fast proxy", "slow"]}
    ]
}


def test_the_example_python_model_serves_with_its_options_and_closes(tmp_path: Path) -> None:
    root = tmp_path / "repository"
    shutil.copytree(REPO / "examples" / "repository", root)
    marker = tmp_path / "closed"
    described = root / "keywords" / "1" / "model.json"
    config = json.loads(described.read_text())
    config["options"]["close_marker"] = str(marker)
    described.write_text(json.dumps(config))
    server = Server(
        *("--model-repository", str(root), "--instances", "1", "--threads", "1"),
        log=tmp_path / "server.log",
    ).wait_ready()
    try:
        url = f"{server.url}/v2/models/keywords/infer"
        scores = httpx.post(url, json=TEXTS, timeout=30).json()["outputs"][0]["data"]
        assert scores == pytest.approx([2 / 3, 0.0])  # "fast" and "proxy" are keywords
        exact = {**TEXTS, "parameters": {"case_sensitive": True}}
        scores = httpx.post(url, json=exact, timeout=30).json()["outputs"][0]["data"]
        assert scores == pytest.approx([1 / 3, 0.0])  # "Fast" is not "fast"
    finally:
        assert server.stop(timeout=20) == 0
    assert marker.read_text() == "closed"  # the worker called close() as it stopped


def test_create_app_mounted_in_fastapi_starts_serves_and_drains() -> None:
    proxy = dlproxy.create_app(models=["echo"], instances=1, threads=1)
    api = FastAPI(lifespan=proxy.lifespan)
    api.mount("/ml", proxy)

    @api.get("/hello")
    def hello() -> dict[str, str]:
        return {"hello": "world"}

    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "INT64", "data": [7]}]}
    with TestClient(api) as client:  # runs the lifespan: the workers start
        assert proxy.service is not None
        workers = [
            i.pid for pool in proxy.service.gateway.all_pools() for i in pool.instances if i.pid
        ]
        assert client.get("/hello").json() == {"hello": "world"}
        answer = client.post("/ml/v2/models/echo/infer", json=body)
        assert answer.status_code == 200 and answer.json()["outputs"][0]["data"] == [7]
        assert client.get("/ml/v2/health/ready").status_code == 200
        assert client.get("/ml/v2/models/echo").json()["name"] == "echo"
    assert proxy.service is None and workers
    assert not any(
        psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in workers
    )


def test_create_app_before_its_lifespan_answers_503() -> None:
    proxy = dlproxy.create_app(models=["echo"])
    api = FastAPI()
    api.mount("/ml", proxy)
    client = TestClient(api)  # not entered: no lifespan
    answer = client.post("/ml/v2/models/echo/infer", json={})
    assert answer.status_code == 503 and "lifespan" in answer.json()["error"]


def test_the_fastapi_example_builds_its_app() -> None:
    import runpy

    example = runpy.run_path(str(REPO / "examples" / "fastapi_app.py"))
    assert isinstance(example["api"], FastAPI) and example["proxy"].service is None


def test_dlproxy_serve_runs_the_server_from_a_script(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    from dlproxy.console import free_port

    port = free_port()
    script = f"import dlproxy; dlproxy.serve(models=['echo'], port={port}, instances=1, threads=1)"
    process = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if (
                    httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code
                    == 200
                ):
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        body = {"inputs": [{"name": "x", "shape": [1], "datatype": "INT64", "data": [3]}]}
        answer = httpx.post(f"http://127.0.0.1:{port}/v2/models/echo/infer", json=body, timeout=30)
        assert answer.json()["outputs"][0]["data"] == [3]
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
