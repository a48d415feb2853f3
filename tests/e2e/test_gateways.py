"""``dlproxy serve --gateways 2``: two gateway processes answer on one port (SO_REUSEPORT), share
results through Redis, and SIGTERM stops both gracefully: requests in flight are answered, no
process is left behind."""

from __future__ import annotations

import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from servers import redis_server
from serving import Server, metric_samples

pytestmark = pytest.mark.slow


def infer(url: str, text: str, delay_ms: int = 0) -> httpx.Response:
    """One request on a new connection (the kernel picks a gateway per connection)."""
    body = {
        "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}],
        "parameters": {"delay_ms": delay_ms},
    }
    with httpx.Client(timeout=30) as client:
        return client.post(f"{url}/v2/models/echo/infer", json=body)


def test_two_gateways_share_one_port_and_stop_together_on_sigterm(tmp_path: Path) -> None:
    server = Server(
        "--model", "echo", "--gateways", "2", "--instances", "1", log=tmp_path / "server.log"
    ).wait_ready()
    try:
        supervisor = psutil.Process(server.process.pid)
        gateway_pids = {
            p.pid for p in supervisor.children() if "resource_tracker" not in " ".join(p.cmdline())
        }
        assert len(gateway_pids) == 2
        answered_by: set[int] = set()
        instances: set[str] = set()
        i, until = 0, time.monotonic() + 60
        while time.monotonic() < until:  # new connections until both gateways have answered
            i += 1
            with httpx.Client(timeout=10) as client:
                stats = client.get(f"{server.url}/stats")
            response = infer(server.url, f"hello {i}")
            assert response.status_code == 200, response.text  # not 503: each listens when ready
            assert response.json()["outputs"][0]["data"] == [f"hello {i}"]
            answered_by.add(stats.json()["gateway_pid"])
            instances.add(response.headers["x-dlproxy-instance"].split(".")[0])
            if len(answered_by) == 2 and len(instances) == 2:
                break
        assert answered_by == gateway_pids
        assert instances == {"g1", "g2"}  # each gateway computes with its own worker

        everything = [*supervisor.children(recursive=True), supervisor]
        with ThreadPoolExecutor(8) as pool:
            slow = [pool.submit(infer, server.url, f"slow {k}", 1500) for k in range(8)]
            time.sleep(0.5)  # the requests are in the gateways now
            server.process.send_signal(signal.SIGTERM)
            codes = [future.result().status_code for future in slow]
        assert codes == [200] * 8  # drained, not dropped
        assert server.process.wait(60) == 0
        _, alive = psutil.wait_procs(everything, timeout=10)
        assert alive == []  # gateways and their workers are all gone
    finally:
        server.stop()


def gateway_stats(url: str, gateways: int) -> dict[int, dict[str, object]]:
    """/stats of every gateway, by pid (new connections until each has answered)."""
    seen: dict[int, dict[str, object]] = {}
    until = time.monotonic() + 60  # a gateway listens once its instances are ready
    while time.monotonic() < until:
        with httpx.Client(timeout=10) as client:
            stats = client.get(f"{url}/stats").json()
        seen[stats["gateway_pid"]] = stats
        if len(seen) == gateways:
            return seen
    raise AssertionError(f"only {len(seen)} of {gateways} gateways answered /stats")


def test_gateways_share_results_through_redis(tmp_path: Path) -> None:
    with redis_server() as redis:
        server = Server(
            "--model", "echo", "--gateways", "2", "--instances", "1", "--cache", "none",
            "--redis", redis.url, log=tmp_path / "server.log",
        ).wait_ready()  # fmt: skip
        try:
            levels = []
            for _ in range(30):  # the same item, each time on a new connection
                response = infer(server.url, "computed once for both gateways")
                assert response.status_code == 200, response.text
                assert response.json()["outputs"][0]["data"] == ["computed once for both gateways"]
                levels.append(response.headers["x-dlproxy-cache"])
            assert levels[0] == "miss" and set(levels[1:]) == {"l2"}
            stats = gateway_stats(server.url, 2).values()
            computed = sorted(s["models"]["echo"]["items"] for s in stats)  # type: ignore[index]
            assert computed == [0, 1]  # one gateway computed it; the other only read Redis
            hits = sorted(s["cache"]["l2"]["hits"] for s in stats)  # type: ignore[index]
            assert hits[0] >= 1  # both gateways answered from Redis
        finally:
            assert server.stop() == 0


def test_one_scrape_of_the_admin_port_sums_every_gateway(tmp_path: Path) -> None:
    from dlproxy.console import free_port

    admin = free_port()
    server = Server(
        *("--model", "echo", "--gateways", "2", "--instances", "1", "--cache", "none"),
        *("--admin-port", str(admin)),
        log=tmp_path / "server.log",
    ).wait_ready()
    try:
        # New connections: the kernel spreads them over the gateways listening, and a gateway
        # listens once its instance is ready, so none answers 503 while the other starts.
        answered_by: set[str] = set()
        sent, until = 0, time.monotonic() + 60
        while sent < 40 or (answered_by != {"g1", "g2"} and time.monotonic() < until):
            answer = infer(server.url, f"request {sent}")
            sent += 1
            assert answer.status_code == 200, answer.text
            answered_by.add(answer.headers["x-dlproxy-instance"].split(".")[0])
        assert answered_by == {"g1", "g2"}
        deadline = time.monotonic() + 20
        total = 0.0
        while time.monotonic() < deadline:
            found = metric_samples(f"http://127.0.0.1:{admin}/metrics")
            total = sum(
                value
                for (name, labels), value in found.items()
                if name == "dlproxy_requests_total" and ("code", "200") in labels
            )
            if total == sent:
                break
            time.sleep(0.2)
        assert total == sent  # every request counted once, whichever gateway answered it
        ready = found["dlproxy_instances", (("model", "echo"), ("state", "ready"), ("version", ""))]
        assert ready == 2  # one instance per gateway
        assert found["dlproxy_gateways_scraped", (("result", "ok"),)] == 2
        gateways = {
            dict(k[1]).get("gateway") for k in found if k[0] == "process_resident_memory_bytes"
        }
        assert gateways == {"1", "2"}
        assert httpx.get(f"http://127.0.0.1:{admin}/stats", timeout=10).status_code == 404
    finally:
        assert server.stop(timeout=30) == 0


def test_a_restarted_gateway_takes_connections_only_once_ready(tmp_path: Path) -> None:
    """The supervisor restarts a gateway killed outright; while its new worker starts, the other
    gateway answers every new connection (before, the newcomer listened at once and answered
    503 to its share)."""
    server = Server(
        "--model", "echo", "--gateways", "2", "--instances", "1", "--cache", "none",
        log=tmp_path / "server.log",
    ).wait_ready()  # fmt: skip
    try:
        first = set(gateway_stats(server.url, 2))
        victim = min(first)
        psutil.Process(victim).kill()
        codes: list[int] = []
        until = time.monotonic() + 60
        while time.monotonic() < until:
            codes.append(infer(server.url, f"during the restart {len(codes)}").status_code)
            with httpx.Client(timeout=10) as client:
                pid = client.get(f"{server.url}/stats").json()["gateway_pid"]
            if pid not in first:
                break  # the replacement is serving
        assert pid not in first, "the killed gateway was not replaced"
        assert len(codes) > 5 and set(codes) == {200}, codes
    finally:
        server.stop()
