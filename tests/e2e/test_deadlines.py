"""Deadlines: X-Request-Timeout-Ms gives 504 in time, and queued work past its deadline never
reaches the model."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import orjson

from serving import Server


def body(text: str, **parameters: object) -> bytes:
    return orjson.dumps(
        {
            "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}],
            "parameters": parameters,
        }
    )


def items_computed(server: Server) -> int:
    return sum(row["items"] for row in httpx.get(f"{server.url}/admin/instances").json())


def test_a_request_past_its_deadline_gets_504_in_time(echo_server: Server) -> None:
    started = time.perf_counter()
    response = httpx.post(
        f"{echo_server.url}/v2/models/echo/infer",
        content=body("slow", delay_ms=2000),
        headers={"X-Request-Timeout-Ms": "200"},
        timeout=30,
    )
    elapsed = time.perf_counter() - started
    assert response.status_code == 504
    assert "deadline" in response.json()["error"]
    assert elapsed < 1.5


def test_bad_timeout_headers_are_400(echo_server: Server) -> None:
    for value in ("soon", "-5", "0"):
        response = httpx.post(
            f"{echo_server.url}/v2/models/echo/infer",
            content=body("x"),
            headers={"X-Request-Timeout-Ms": value},
        )
        assert response.status_code == 400, value


def test_queued_requests_past_their_deadline_never_reach_the_model(tmp_path: Path) -> None:
    server = Server(
        "--admin-loopback",
        "--model",
        "echo",
        "--instances",
        "1",
        "--pipeline-depth",
        "1",
        log=tmp_path / "log",
    ).wait_ready()
    try:
        before = items_computed(server)

        async def scenario() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=30) as client:
                url = f"{server.url}/v2/models/echo/infer"
                blocker = asyncio.ensure_future(
                    client.post(url, content=body("blocker", delay_ms=800))
                )
                await asyncio.sleep(0.2)  # the blocker holds the only instance
                doomed = [
                    client.post(
                        url, content=body(f"late {i}"), headers={"X-Request-Timeout-Ms": "150"}
                    )
                    for i in range(5)
                ]
                return await asyncio.gather(blocker, *doomed)

        blocker, *doomed = asyncio.run(scenario())
        assert blocker.status_code == 200
        assert [r.status_code for r in doomed] == [504] * 5
        time.sleep(0.3)
        assert items_computed(server) - before == 1
    finally:
        assert server.stop() == 0


def test_a_client_over_its_rate_limit_gets_429_with_retry_after(tmp_path: Path) -> None:
    server = Server(
        "--admin-loopback",
        "--model",
        "echo",
        "--instances",
        "1",
        "--rate-limit",
        "5",
        "--rate-burst",
        "5",
        log=tmp_path / "log",
    ).wait_ready()
    try:
        with httpx.Client() as client:
            codes = [
                client.post(f"{server.url}/v2/models/echo/infer", content=body(f"r{i}"))
                for i in range(12)
            ]
        limited = [r for r in codes if r.status_code == 429]
        assert [r.status_code for r in codes][:5] == [200] * 5
        assert limited and all(int(r.headers["retry-after"]) >= 1 for r in limited)
        assert "rate limit" in limited[0].json()["error"]
    finally:
        assert server.stop() == 0
