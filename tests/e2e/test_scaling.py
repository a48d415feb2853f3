"""Live scaling: instances added and drained at run time with zero failed requests, by the admin
route and by the autoscaler reacting to a step in load."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from serving import Server

BODY = orjson.dumps(
    {
        "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["load"]}],
        "parameters": {"delay_ms": 40},
    }
)


def ready(server: Server) -> int:
    return sum(r["state"] == "ready" for r in httpx.get(f"{server.url}/admin/instances").json())


async def load(url: str, clients: int, seconds: float) -> list[int]:
    """Closed-loop load; returns every status code (each request is a distinct coalescing key)."""
    codes: list[int] = []
    stop = time.monotonic() + seconds

    async def client(k: int, http: httpx.AsyncClient) -> None:
        i = 0
        while time.monotonic() < stop:
            body = BODY.replace(b'"load"', f'"load {k} {i}"'.encode())
            codes.append((await http.post(f"{url}/v2/models/echo/infer", content=body)).status_code)
            i += 1

    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=clients)) as http:
        await asyncio.gather(*(client(k, http) for k in range(clients)))
    return codes


def test_admin_scale_adds_and_drains_instances_under_load(tmp_path: Path) -> None:
    server = Server(
        "--admin-loopback", "--model", "echo", "--instances", "1", log=tmp_path / "log"
    ).wait_ready()
    try:

        async def scenario() -> list[int]:
            running = asyncio.ensure_future(load(server.url, 8, 4.0))
            async with httpx.AsyncClient(timeout=60) as http:
                await asyncio.sleep(0.5)
                up = await http.post(f"{server.url}/admin/models/echo/scale", json={"instances": 3})
                assert up.json()["instances"] == 3
                assert ready(server) == 3
                await asyncio.sleep(1.0)
                down = await http.post(
                    f"{server.url}/admin/models/echo/scale", json={"instances": 1}
                )
                assert down.json()["instances"] == 1
            return await running

        codes = asyncio.run(scenario())
        assert codes and set(codes) == {200}
        assert ready(server) == 1
        bad = httpx.post(f"{server.url}/admin/models/echo/scale", json={"instances": "many"})
        assert bad.status_code == 400
    finally:
        assert server.stop() == 0


def test_the_autoscaler_follows_a_step_in_load(tmp_path: Path) -> None:
    server = Server(
        "--admin-loopback",
        "--model",
        "echo",
        "--instances",
        "1",
        "--autoscale",
        "queue_length",
        "--scale-option",
        "target=2",
        "--scale-option",
        "stable_window=3",
        "--scale-option",
        "panic_window=1",
        "--min-instances",
        "1",
        "--max-instances",
        "3",
        "--scale-down-cooldown-s",
        "2",
        "--max-batch",
        "2",
        log=tmp_path / "log",
    ).wait_ready()
    try:
        started = time.monotonic()

        async def step() -> tuple[list[int], float | None]:
            running = asyncio.ensure_future(load(server.url, 12, 8.0))
            scaled_at = None
            while not running.done():
                await asyncio.sleep(0.25)
                if scaled_at is None and await asyncio.to_thread(ready, server) > 1:
                    scaled_at = time.monotonic() - started
            return await running, scaled_at

        codes, scaled_at = asyncio.run(step())
        assert codes and set(codes) == {200}
        assert scaled_at is not None and scaled_at < 8.0
        deadline = time.monotonic() + 30
        while ready(server) > 1 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert ready(server) == 1
        families = {
            f.name: f
            for f in text_string_to_metric_families(httpx.get(f"{server.url}/metrics").text)
        }
        decisions = {
            s.labels["direction"]: s.value for s in families["dlproxy_scaling_decisions"].samples
        }
        assert decisions.get("up", 0) >= 1 and decisions.get("down", 0) >= 1
    finally:
        assert server.stop() == 0
