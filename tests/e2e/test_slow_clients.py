"""Slow and greedy clients against a real gateway: headers or bodies sent too slowly get 408,
headers too large 431, connections past the cap 503, each then closed; and 2,000 connections
holding half-sent requests leave other clients served about as fast as on a quiet server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from serving import Server, metric_samples

BODY = orjson.dumps(
    {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hello"]}]}
)
HEAD = b"POST /v2/models/echo/infer HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("slow") / "server.log"
    server = Server(
        "--model", "echo", "--instances", "1", "--threads", "1",
        "--header-timeout-s", "1", "--body-timeout-s", "1", "--max-connections", "2100",
        log=log,
    ).wait_ready()  # fmt: skip
    yield server
    server.stop()


async def answer_to(port: int, sent: bytes, wait: float = 5.0) -> bytes:
    """What the server answers (until it closes) to a connection that sends ``sent`` and stops."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(sent)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), wait)
    finally:
        writer.close()


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize(
    ("sent", "status", "complaint"),
    [
        (HEAD, 408, b"headers did not arrive within 1 s"),  # never ends its headers
        (HEAD + b"Content-Length: 100\r\n\r\n" + b"{" * 10, 408, b"body did not arrive"),
        (HEAD + b"X-Big: " + b"a" * 40000 + b"\r\n\r\n", 431, b"over the limit of 32768"),
        (HEAD + b"X-Big: " + b"a" * 40000, 431, b"over the limit"),  # too big, and unfinished
    ],
)
def test_a_client_too_slow_or_too_big_is_answered_and_closed(
    guarded: Server, sent: bytes, status: int, complaint: bytes
) -> None:
    started = time.monotonic()
    answer = asyncio.run(answer_to(guarded.port, sent))
    assert status_of(answer) == status and complaint in answer
    assert time.monotonic() - started < 3.0


def test_connections_past_the_cap_are_refused_with_503(tmp_path: Path) -> None:
    server = Server(
        "--model", "echo", "--instances", "1", "--threads", "1", "--max-connections", "20",
        log=tmp_path / "server.log",
    ).wait_ready()  # fmt: skip

    async def crowd() -> bytes:
        held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(20)]
        try:
            await asyncio.sleep(0.2)
            return await answer_to(server.port, b"")
        finally:
            for _, writer in held:
                writer.close()

    try:
        answer = asyncio.run(crowd())
        assert status_of(answer) == 503 and b"limit of 20 connections" in answer
        response = httpx.post(f"{server.url}/v2/models/echo/infer", content=BODY, timeout=10)
        assert response.status_code == 200  # the crowd gone, a client is served again
        samples = metric_samples(f"{server.url}/metrics")
        assert samples["dlproxy_rejected_total", (("model", ""), ("reason", "connections"))] == 1
    finally:
        server.stop()


async def p99_of_good_clients(url: str, seconds: float, clients: int = 8) -> float:
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    async def client(http: httpx.AsyncClient) -> None:
        while time.monotonic() < stop:
            started = time.perf_counter()
            response = await http.post(f"{url}/v2/models/echo/infer", content=BODY)
            assert response.status_code == 200
            latencies.append(time.perf_counter() - started)

    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=clients)) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    latencies.sort()
    return latencies[int(0.99 * (len(latencies) - 1))]


def test_two_thousand_slow_connections_leave_other_clients_served(tmp_path: Path) -> None:
    server = Server(
        "--model", "echo", "--instances", "1", "--threads", "1", log=tmp_path / "server.log"
    ).wait_ready()  # defaults: 4,096 connections, 10 s for headers, 30 s between body pieces

    async def run() -> tuple[float, float, int]:
        # Noise only ever adds latency: the best of three short rounds is compared on each side.
        await p99_of_good_clients(server.url, 1.0)  # warm
        quiet = [await p99_of_good_clients(server.url, 1.5) for _ in range(2)]
        slow = []
        for index in range(2000):  # half never end their headers, half never end their body
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(HEAD if index % 2 else HEAD + b"Content-Length: 1000\r\n\r\n{")
            slow.append((reader, writer))
        try:
            await asyncio.sleep(0.5)  # the server has read what they sent
            loaded = [await p99_of_good_clients(server.url, 1.5) for _ in range(3)]
            still_open = sum(not reader.at_eof() for reader, _ in slow)
        finally:
            for _, writer in slow:
                writer.close()
        quiet.append(await p99_of_good_clients(server.url, 1.5))
        return min(quiet), min(loaded), still_open

    try:
        quiet, loaded, still_open = asyncio.run(run())
    finally:
        server.stop()
    assert still_open == 2000  # held, within their time limits
    assert loaded <= 2 * quiet + 0.002, (quiet, loaded)  # 2 ms of slack for a shared machine
