"""The gateway in a subprocess in front of `echo` workers: admin, scheduling, backpressure, shutdown."""

from __future__ import annotations

import asyncio
import collections
import signal
import time
from pathlib import Path

import httpx
import orjson

from serving import Server


def body(text: str, **parameters: object) -> bytes:
    request: dict[str, object] = {
        "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}]
    }
    if parameters:
        request["parameters"] = parameters
    return orjson.dumps(request)


async def send_many(
    url: str, bodies: list[bytes], headers: dict[str, str] | None = None
) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(bodies))
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        return await asyncio.gather(
            *(
                client.post(f"{url}/v2/models/echo/infer", content=b, headers=headers or {})
                for b in bodies
            )
        )


def test_admin_lists_the_instances_with_their_pids(echo_server: Server) -> None:
    rows = httpx.get(f"{echo_server.url}/admin/instances").json()
    assert len(rows) == 2
    assert {row["state"] for row in rows} == {"ready"}
    assert sorted(row["pid"] for row in rows) == echo_server.worker_pids()


def test_concurrent_requests_each_get_their_own_answer(echo_server: Server) -> None:
    texts = [f"sentence number {i}" for i in range(200)]
    responses = asyncio.run(send_many(echo_server.url, [body(t) for t in texts]))
    assert [r.status_code for r in responses] == [200] * 200
    assert [r.json()["outputs"][0]["data"][0] for r in responses] == texts
    assert {r.headers["x-dlproxy-instance"] for r in responses} == {"w1", "w2"}


def test_weighted_round_robin_follows_the_weights(tmp_path: Path) -> None:
    server = Server(
        "--admin-loopback",
        "--model",
        "echo",
        "--instances",
        "2",
        "--policy",
        "weighted_round_robin",
        "--weights",
        "3,1",
        log=tmp_path / "log",
    ).wait_ready()
    try:
        with httpx.Client() as client:
            seen = collections.Counter(
                client.post(f"{server.url}/v2/models/echo/infer", content=body(f"t{i}")).headers[
                    "x-dlproxy-instance"
                ]
                for i in range(40)
            )
        assert sorted(seen.values()) == [10, 30]
    finally:
        assert server.stop() == 0


def test_consistent_hash_keeps_a_session_on_one_instance(tmp_path: Path) -> None:
    server = Server(
        "--admin-loopback",
        "--model",
        "echo",
        "--instances",
        "2",
        "--policy",
        "consistent_hash",
        log=tmp_path / "log",
    ).wait_ready()
    try:
        homes = set()
        with httpx.Client() as client:
            for session in ("alice", "bob", "carol", "dave", "erin", "frank"):
                seen = {
                    client.post(
                        f"{server.url}/v2/models/echo/infer",
                        content=body(f"t{i}"),
                        headers={"X-Session-Key": session},
                    ).headers["x-dlproxy-instance"]
                    for i in range(10)
                }
                assert len(seen) == 1  # one at a time, so the load bound never pushes it elsewhere
                homes |= seen
        assert homes == {"w1", "w2"}
    finally:
        assert server.stop() == 0


def test_a_full_queue_answers_503_with_retry_after_at_once(tmp_path: Path) -> None:
    server = Server(
        "--admin-loopback",
        "--model",
        "echo",
        "--instances",
        "1",
        "--max-queue",
        "4",
        "--pipeline-depth",
        "1",
        log=tmp_path / "log",
    ).wait_ready()
    try:
        started = time.perf_counter()
        responses = asyncio.run(
            send_many(server.url, [body(f"t{i}", delay_ms=300) for i in range(30)])
        )
        refused = [r for r in responses if r.status_code == 503]
        assert refused and all(r.headers.get("retry-after") for r in refused)
        assert all("full" in r.json()["error"] for r in refused)
        assert {r.status_code for r in responses} <= {200, 503}
        assert time.perf_counter() - started < 20
    finally:
        assert server.stop() == 0


def test_sigterm_finishes_in_flight_requests_and_exits_0(tmp_path: Path) -> None:
    server = Server(
        "--admin-loopback", "--model", "echo", "--instances", "2", log=tmp_path / "log"
    ).wait_ready()
    workers = server.worker_pids()

    async def scenario() -> list[httpx.Response]:
        pending = asyncio.ensure_future(
            send_many(server.url, [body(f"t{i}", delay_ms=400) for i in range(40)])
        )
        await asyncio.sleep(0.3)
        server.process.send_signal(signal.SIGTERM)
        return await pending

    responses = asyncio.run(scenario())
    assert [r.status_code for r in responses] == [200] * 40
    assert server.process.wait(60) == 0
    import psutil

    assert not any(
        psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        for pid in workers
    )


def test_workers_die_with_a_killed_gateway(tmp_path: Path) -> None:
    import psutil

    server = Server(
        "--admin-loopback", "--model", "echo", "--instances", "2", log=tmp_path / "log"
    ).wait_ready()
    workers = [psutil.Process(pid) for pid in server.worker_pids()]
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(10)
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive
