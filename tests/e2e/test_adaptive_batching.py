"""``--batching adaptive``: a server started with an SLO serves; one without an SLO refuses."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest

from serving import Server

pytestmark = pytest.mark.slow


def body(text: str) -> bytes:
    return orjson.dumps(
        {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}]}
    )


async def send_many(url: str, texts: list[str]) -> list[httpx.Response]:
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=32), timeout=60) as client:
        return await asyncio.gather(
            *(client.post(f"{url}/v2/models/echo/infer", content=body(t)) for t in texts)
        )


def test_an_adaptive_server_answers_every_request(tmp_path: Path) -> None:
    server = Server(
        "--admin-loopback",
        *("--model", "echo", "--instances", "1", "--threads", "1"),
        *("--batching", "adaptive", "--slo-ms", "50", "--max-batch", "16"),
        log=tmp_path / "server.log",
    ).wait_ready()
    try:
        texts = [f"sentence {i}" for i in range(300)]
        responses = asyncio.run(send_many(server.url, texts))
        assert [r.status_code for r in responses] == [200] * len(texts)
        assert [r.json()["outputs"][0]["data"][0] for r in responses] == texts
        # The limit starts at 1 and grows while full batches meet the budget: under this load
        # (32 at a time on echo, far under a 50 ms SLO) it must have grown, never past the cap.
        limits = [row["batch_limit"] for row in httpx.get(f"{server.url}/admin/instances").json()]
        assert limits and 1 < max(limits) <= 16
    finally:
        assert server.stop() == 0


def test_adaptive_batching_without_an_slo_is_refused_clearly() -> None:
    finished = subprocess.run(
        [sys.executable, "-m", "dlproxy", "serve", "--model", "echo", "--batching", "adaptive"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert finished.returncode == 2
    assert "batching 'adaptive' needs an SLO" in finished.stderr
    assert "Traceback" not in finished.stderr
