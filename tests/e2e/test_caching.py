"""Result caching and coalescing through a real gateway: per-item hits, one inference for many
identical requests, the same key through KServe and OpenAI."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from serving import Server


@pytest.fixture(scope="module")
def cached_echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("cached") / "server.log"
    server = Server(
        "--admin-loopback", "--model", "echo", "--instances", "2", "--cache", "tinylfu", log=log
    ).wait_ready()
    yield server
    server.stop()


def items_computed(server: Server) -> int:
    return sum(row["items"] for row in httpx.get(f"{server.url}/admin/instances").json())


def infer(server: Server, texts: list[str], **parameters: object) -> httpx.Response:
    body: dict[str, object] = {
        "inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}]
    }
    if parameters:
        body["parameters"] = parameters
    return httpx.post(f"{server.url}/v2/models/echo/infer", content=orjson.dumps(body), timeout=30)


def test_a_repeated_request_is_a_cache_hit(cached_echo: Server) -> None:
    first = infer(cached_echo, ["repeat me"])
    before = items_computed(cached_echo)
    second = infer(cached_echo, ["repeat me"])
    assert first.headers["x-dlproxy-cache"] == "miss"
    assert second.headers["x-dlproxy-cache"] == "l1"
    assert second.json()["outputs"] == first.json()["outputs"]
    assert items_computed(cached_echo) == before


def test_only_the_uncached_items_of_a_request_reach_the_model(cached_echo: Server) -> None:
    infer(cached_echo, ["a1", "a2", "a3"])
    before = items_computed(cached_echo)
    response = infer(cached_echo, ["a1", "b1", "a2", "b2", "a3"])
    assert response.json()["outputs"][0]["data"] == ["a1", "b1", "a2", "b2", "a3"]
    assert response.headers["x-dlproxy-cache"] == "miss"
    assert items_computed(cached_echo) - before == 2


def test_64_concurrent_identical_requests_run_one_inference(cached_echo: Server) -> None:
    before = items_computed(cached_echo)

    async def burst() -> list[httpx.Response]:
        body = orjson.dumps(
            {
                "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["same"]}],
                "parameters": {"delay_ms": 300},
            }
        )
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=64), timeout=30) as client:
            return await asyncio.gather(
                *(
                    client.post(f"{cached_echo.url}/v2/models/echo/infer", content=body)
                    for _ in range(64)
                )
            )

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 64
    assert {r.json()["outputs"][0]["data"][0] for r in responses} == {"same"}
    assert items_computed(cached_echo) - before == 1
    assert {r.headers["x-dlproxy-cache"] for r in responses} <= {"miss", "coalesced", "l1"}


def test_waiters_share_the_leaders_error(cached_echo: Server) -> None:
    async def burst() -> list[httpx.Response]:
        body = orjson.dumps(
            {
                "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["doomed"]}],
                "parameters": {"delay_ms": 200, "fail": True},
            }
        )
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=8), timeout=30) as client:
            return await asyncio.gather(
                *(
                    client.post(f"{cached_echo.url}/v2/models/echo/infer", content=body)
                    for _ in range(8)
                )
            )

    responses = asyncio.run(burst())
    assert {r.status_code for r in responses} == {500}
    assert all("fail" in r.json()["error"] for r in responses)


def test_different_parameters_are_different_entries(cached_echo: Server) -> None:
    infer(cached_echo, ["param"], delay_ms=1)
    response = infer(cached_echo, ["param"], delay_ms=2)
    assert response.headers["x-dlproxy-cache"] == "miss"


def test_without_a_cache_nothing_is_reused(tmp_path: Path) -> None:
    server = Server(
        "--admin-loopback", "--model", "echo", "--instances", "1", log=tmp_path / "log"
    ).wait_ready()
    try:
        infer(server, ["x"])
        assert infer(server, ["x"]).headers["x-dlproxy-cache"] == "miss"
    finally:
        assert server.stop() == 0
