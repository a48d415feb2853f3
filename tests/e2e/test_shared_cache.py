"""The shared cache level through real gateways and a real Redis: two gateways share results,
a Redis killed under load fails no request (and is used again once it is back), and write-back
entries reach Redis when the gateway is stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson
import pytest
import redis

from servers import RedisServer, memcached_server, redis_server
from serving import Server


@pytest.fixture
def shared_redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


def gateway(redis_url: str, log: Path, *args: str) -> Server:
    return Server(
        "--admin-loopback",
        "--model", "echo", "--instances", "1", "--threads", "1", "--cache", "lru",
        "--redis", redis_url, *args, log=log,
    ).wait_ready()  # fmt: skip


def body(texts: list[str]) -> bytes:
    return orjson.dumps(
        {"inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}]}
    )


def infer(server: Server, texts: list[str]) -> httpx.Response:
    return httpx.post(f"{server.url}/v2/models/echo/infer", content=body(texts), timeout=30)


def items_computed(server: Server) -> int:
    return sum(row["items"] for row in httpx.get(f"{server.url}/admin/instances").json())


def stored_keys(server: RedisServer) -> int:
    with redis.Redis.from_url(server.url) as client:
        return sum(1 for _ in client.scan_iter(match=b"dlp:*", count=1000))


def test_an_item_computed_by_one_gateway_is_an_l2_hit_on_the_other(
    shared_redis: RedisServer, tmp_path: Path
) -> None:
    a = gateway(shared_redis.url, tmp_path / "a.log")
    b = gateway(shared_redis.url, tmp_path / "b.log")
    try:
        first = infer(a, ["shared between gateways"])
        assert first.headers["x-dlproxy-cache"] == "miss"
        second = infer(b, ["shared between gateways"])
        assert second.status_code == 200
        assert second.headers["x-dlproxy-cache"] == "l2"
        assert second.json()["outputs"] == first.json()["outputs"]
        assert items_computed(b) == 0
        assert infer(b, ["shared between gateways"]).headers["x-dlproxy-cache"] == "l1"
        mixed = infer(b, ["shared between gateways", "only on b"])
        assert mixed.headers["x-dlproxy-cache"] == "miss"
        assert mixed.json()["outputs"][0]["data"] == ["shared between gateways", "only on b"]
        assert items_computed(b) == 1
    finally:
        assert a.stop() == 0
        assert b.stop() == 0


def test_memcached_alone_is_the_cache_with_cache_none(tmp_path: Path) -> None:
    with memcached_server() as memcached:
        server = Server(
            "--admin-loopback",
            "--model", "echo", "--instances", "1", "--threads", "1", "--cache", "none",
            "--memcached", memcached.address, "--write-policy", "combining",
            log=tmp_path / "gateway.log",
        ).wait_ready()  # fmt: skip
        try:
            assert infer(server, ["in memcached"]).headers["x-dlproxy-cache"] == "miss"
            again = infer(server, ["in memcached"])
            assert again.headers["x-dlproxy-cache"] == "l2"  # no L1: every hit is from L2
            assert again.json()["outputs"][0]["data"] == ["in memcached"]
            assert items_computed(server) == 1
        finally:
            assert server.stop() == 0


async def _load(url: str, texts: list[str], seconds: float, clients: int) -> Counter[int]:
    """``clients`` closed loops sending single items from ``texts`` for ``seconds``."""
    statuses: Counter[int] = Counter()
    deadline = time.monotonic() + seconds

    async def client_loop(client: httpx.AsyncClient, offset: int) -> None:
        n = offset
        while time.monotonic() < deadline:
            text = texts[n % len(texts)]
            n += clients
            try:
                response = await client.post(f"{url}/v2/models/echo/infer", content=body([text]))
                statuses[response.status_code] += 1
            except httpx.HTTPError:
                statuses[0] += 1

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        await asyncio.gather(*(client_loop(client, i) for i in range(clients)))
    return statuses


def test_redis_killed_under_load_fails_no_request_and_is_used_again(
    shared_redis: RedisServer, tmp_path: Path
) -> None:
    server = gateway(shared_redis.url, tmp_path / "gateway.log")
    try:
        texts = [f"load item {i}" for i in range(3000)]

        async def scenario() -> Counter[int]:
            load = asyncio.create_task(_load(server.url, texts, seconds=2.5, clients=32))
            await asyncio.sleep(0.8)
            assert stored_keys(shared_redis) > 0  # Redis was in use before it died
            shared_redis.kill()
            return await load

        statuses = asyncio.run(scenario())
        assert set(statuses) == {200}, statuses
        assert statuses[200] > 100

        shared_redis.start()  # same port, empty: the gateway must find it again by itself
        deadline = time.monotonic() + 10
        n = 0
        while stored_keys(shared_redis) == 0:
            assert time.monotonic() < deadline, "the gateway did not use Redis again"
            assert infer(server, [f"after the restart {n}"]).status_code == 200
            n += 1
            time.sleep(0.05)
    finally:
        assert server.stop() == 0


def test_write_back_entries_reach_redis_on_sigterm(
    shared_redis: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A flush interval longer than the test: only the shutdown flush can put them in Redis.
    monkeypatch.setenv("DLPROXY_WRITE_BACK_INTERVAL_MS", "600000")
    server = gateway(shared_redis.url, tmp_path / "gateway.log", "--write-policy", "back")
    try:
        for batch in range(10):
            texts = [f"write-back item {batch}-{i}" for i in range(12)]
            assert infer(server, texts).status_code == 200
        assert infer(server, ["write-back item 0-0"]).headers["x-dlproxy-cache"] == "l1"
        assert stored_keys(shared_redis) == 0
    finally:
        assert server.stop() == 0
    assert stored_keys(shared_redis) == 120


def test_write_back_is_flushed_from_the_start_of_shutdown_and_a_second_sigterm_loses_nothing(
    shared_redis: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DLPROXY_WRITE_BACK_INTERVAL_MS", "600000")
    server = gateway(shared_redis.url, tmp_path / "gateway.log", "--write-policy", "back")
    for batch in range(10):
        assert infer(server, [f"early {batch}-{i}" for i in range(12)]).status_code == 200
    slow_body = orjson.dumps(
        {
            "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["late"]}],
            "parameters": {"delay_ms": 3000},
        }
    )
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(
            httpx.post, f"{server.url}/v2/models/echo/infer", content=slow_body, timeout=30
        )
        time.sleep(0.5)  # the slow request is with the worker: the drain waits for it
        server.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 2.0
        while stored_keys(shared_redis) < 120:  # flushed while the drain goes on
            assert time.monotonic() < deadline, "the write-back entries wait for the drain"
            time.sleep(0.05)
        server.process.send_signal(signal.SIGTERM)  # an impatient supervisor: nothing is lost
        assert slow.result().status_code == 200
    assert server.stop() == 0
    assert stored_keys(shared_redis) == 121  # the late one too: stored as it was answered
