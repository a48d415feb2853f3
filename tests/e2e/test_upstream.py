"""A front ``dlproxy serve --upstream URL --upstream URL`` over two echo servers, all subprocesses,
driven by real clients (httpx, tritonclient). One upstream is stopped under load and restarted on
the same port; the front must answer every request throughout.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from serving import Server

pytestmark = pytest.mark.slow
ECHO = ("--model", "echo", "--instances", "1", "--threads", "1")


class Upstream(Server):
    """An echo server that can be started again on the same port, as a restarted server would."""

    def __init__(self, log: Path) -> None:
        self.log_path = log
        super().__init__(*ECHO, log=log)

    def restart(self) -> Upstream:
        self.stop()
        command = [sys.executable, "-m", "dlproxy", "serve", "--port", str(self.port), *ECHO]
        self._log = open(self.log_path, "ab")  # closed by stop()
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        return self.wait_ready()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, list[Upstream]]]:
    logs = tmp_path_factory.mktemp("upstream-e2e")
    upstreams = [Upstream(logs / "u1.log"), Upstream(logs / "u2.log")]
    front: Server | None = None
    try:
        for upstream in upstreams:
            upstream.wait_ready()
        front = Server(
            "--admin-loopback",
            "--model",
            "echo",
            *(arg for u in upstreams for arg in ("--upstream", u.url)),
            "--health-interval-s",
            "0.2",
            log=logs / "front.log",
        ).wait_ready()
        yield front, upstreams
    finally:
        if front is not None:
            front.stop()
        for upstream in upstreams:
            upstream.stop()


def body(text: str) -> dict[str, object]:
    return {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}]}


def states(front: Server) -> dict[str, str]:
    rows = httpx.get(f"{front.url}/admin/instances", timeout=5).json()
    return {row["id"]: row["state"] for row in rows}


def test_the_front_answers_through_both_upstreams(
    cluster: tuple[Server, list[Upstream]],
) -> None:
    front, _ = cluster
    seen: Counter[str] = Counter()
    with httpx.Client(base_url=front.url, timeout=10) as client:
        for i in range(20):
            response = client.post("/v2/models/echo/infer", json=body(f"hello {i}"))
            assert response.status_code == 200, response.text
            assert response.json()["outputs"][0]["data"] == [f"hello {i}"]
            seen[response.headers["x-dlproxy-instance"]] += 1
        assert client.get("/v2/models/echo").json()["platform"] == "python"  # the upstream's
    assert set(seen) == {"u1", "u2"}


def test_admin_lists_the_upstreams_with_their_state(
    cluster: tuple[Server, list[Upstream]],
) -> None:
    front, upstreams = cluster
    rows = httpx.get(f"{front.url}/admin/instances", timeout=5).json()
    assert [(r["id"], r["reference"], r["state"], r["pid"]) for r in rows] == [
        ("u1", upstreams[0].url, "ready", None),
        ("u2", upstreams[1].url, "ready", None),
    ]
    assert front.worker_pids() == []  # no local worker: the upstreams serve


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_works_through_the_front(
    cluster: tuple[Server, list[Upstream]], binary: bool
) -> None:
    front, _ = cluster
    client = triton.InferenceServerClient(front.url.removeprefix("http://"))
    assert client.is_server_ready() and client.is_model_ready("echo")
    text = triton.InferInput("text", [2], "BYTES")
    text.set_data_from_numpy(np.array([b"one", b"two"], dtype=object), binary_data=binary)
    x = triton.InferInput("x", [2, 3], "FP32")
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    x.set_data_from_numpy(values, binary_data=binary)
    outputs = [triton.InferRequestedOutput(n, binary_data=binary) for n in ("text", "x")]
    result = client.infer("echo", [text, x], outputs=outputs)
    texts = result.as_numpy("text").tolist()  # tritonclient gives str for JSON BYTES outputs
    assert [t if isinstance(t, bytes) else t.encode() for t in texts] == [b"one", b"two"]
    np.testing.assert_array_equal(result.as_numpy("x"), values)


async def _load(url: str, stop: asyncio.Event, clients: int) -> tuple[Counter[int], Counter[str]]:
    codes: Counter[int] = Counter()
    instances: Counter[str] = Counter()
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

        async def one(k: int) -> None:
            i = 0
            while not stop.is_set():
                response = await client.post("/v2/models/echo/infer", json=body(f"{k}-{i}"))
                codes[response.status_code] += 1
                if response.status_code == 200:
                    assert response.json()["outputs"][0]["data"] == [f"{k}-{i}"]
                    instances[response.headers["x-dlproxy-instance"]] += 1
                i += 1

        await asyncio.gather(*(one(k) for k in range(clients)))
    return codes, instances


async def _until(condition: Callable[[], bool], within: float) -> float:
    """Seconds until ``condition()`` holds (asked in a thread: it makes blocking HTTP calls)."""
    started = time.monotonic()
    while not await asyncio.to_thread(condition):
        assert time.monotonic() - started < within, "timed out"
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def test_an_upstream_stopped_under_load_fails_no_request_and_comes_back(
    cluster: tuple[Server, list[Upstream]],
) -> None:
    front, upstreams = cluster
    stop = asyncio.Event()
    load = asyncio.ensure_future(_load(front.url, stop, clients=12))
    try:
        await asyncio.sleep(1.0)
        upstreams[0].process.send_signal(signal.SIGTERM)  # drains, then stops listening
        out = await _until(lambda: states(front)["u1"] in ("unhealthy", "ejected"), within=10)
        await asyncio.sleep(1.0)
    finally:
        stop.set()
        codes, _ = await load
    assert out < 5
    assert set(codes) == {200} and codes[200] > 100, codes
    assert states(front) == {"u1": "unhealthy", "u2": "ready"}

    await asyncio.to_thread(upstreams[0].restart)
    await _until(lambda: states(front)["u1"] == "ready", within=10)
    stop = asyncio.Event()
    load = asyncio.ensure_future(_load(front.url, stop, clients=4))
    await asyncio.sleep(1.0)
    stop.set()
    codes, instances = await load
    assert set(codes) == {200}
    assert instances["u1"] > 0 and instances["u2"] > 0, instances
