"""Safe defaults behind an ingress, on a real server: admin routes closed without a token unless
loopback is trusted on purpose; X-Forwarded-For believed from the named proxies only (a forwarded
outsider is not loopback and gets its own rate-limit bucket; from an untrusted peer the header
changes nothing); the operator routes on a port of their own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dlproxy.console import free_port
from serving import Server

ECHO = {"inputs": [{"name": "x", "shape": [1], "datatype": "INT64", "data": [1]}]}


def echo(url: str, client: str | None = None) -> httpx.Response:
    headers = {"X-Forwarded-For": client} if client else {}
    return httpx.post(f"{url}/v2/models/echo/infer", json=ECHO, headers=headers, timeout=30)


def admin(url: str, client: str | None = None) -> httpx.Response:
    headers = {"X-Forwarded-For": client} if client else {}
    return httpx.get(f"{url}/admin/instances", headers=headers, timeout=30)


@pytest.fixture
def serving(tmp_path: Path) -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        assert server.stop(timeout=20) == 0


def start(serving: list[Server], tmp_path: Path, *args: str) -> Server:
    server = Server(
        *("--model", "echo", "--instances", "1", "--threads", "1", *args),
        log=tmp_path / f"server{len(serving)}.log",
    )
    serving.append(server)
    return server.wait_ready()


def test_without_a_token_admin_routes_are_closed_even_to_this_machine(
    serving: list[Server], tmp_path: Path
) -> None:
    server = start(serving, tmp_path)
    refused = admin(server.url)
    assert refused.status_code == 403 and "--admin-loopback" in refused.json()["error"]
    index = httpx.post(f"{server.url}/v2/repository/index", timeout=30)
    assert index.status_code == 403
    assert echo(server.url).status_code == 200  # inference is unaffected


def test_a_trusted_proxy_names_the_client_for_admin_and_rate_limits(
    serving: list[Server], tmp_path: Path
) -> None:
    server = start(
        serving,
        tmp_path,
        *("--admin-loopback", "--forwarded-allow-ips", "127.0.0.1"),
        *("--rate-limit", "0.01", "--rate-burst", "1"),
    )
    assert admin(server.url).status_code == 200  # the proxy itself is on loopback
    assert admin(server.url, "203.0.113.7").status_code == 403  # an outsider it forwards is not
    assert echo(server.url, "203.0.113.1").status_code == 200
    assert echo(server.url, "203.0.113.2").status_code == 200  # another client, another bucket
    assert echo(server.url, "203.0.113.1").status_code == 429  # the first one's bucket is empty


def test_from_an_untrusted_peer_the_forwarded_header_changes_nothing(
    serving: list[Server], tmp_path: Path
) -> None:
    server = start(
        serving,
        tmp_path,
        *("--admin-loopback", "--forwarded-allow-ips", "10.9.9.9"),
        *("--rate-limit", "0.01", "--rate-burst", "1"),
    )
    assert admin(server.url, "203.0.113.7").status_code == 200  # still the loopback peer
    assert echo(server.url, "203.0.113.1").status_code == 200
    assert echo(server.url, "203.0.113.2").status_code == 429  # one peer, one bucket


def test_operator_routes_on_their_own_port(serving: list[Server], tmp_path: Path) -> None:
    port = free_port()
    server = start(serving, tmp_path, "--admin-loopback", "--admin-port", str(port))
    operator = f"http://127.0.0.1:{port}"
    assert echo(server.url).status_code == 200
    for path in ("/metrics", "/stats", "/admin/instances", "/dashboard"):
        moved = httpx.get(f"{server.url}{path}", timeout=30)
        assert moved.status_code == 404 and "admin port" in moved.json()["error"], path
        assert httpx.get(f"{operator}{path}", timeout=30).status_code == 200, path
    assert echo(operator).status_code == 404  # inference stays on the main port
    assert "dlproxy_requests_total" in httpx.get(f"{operator}/metrics", timeout=30).text


def test_a_shutdown_takes_no_longer_than_the_graceful_shutdown_time(tmp_path: Path) -> None:
    import threading
    import time

    server = Server(
        *("--model", "echo", "--instances", "1", "--threads", "1", "--graceful-shutdown-s", "2"),
        log=tmp_path / "server.log",
    ).wait_ready()
    slow = {"inputs": ECHO["inputs"], "parameters": {"delay_ms": 20_000}}
    answers: list[int] = []

    def hold() -> None:
        try:
            answer = httpx.post(f"{server.url}/v2/models/echo/infer", json=slow, timeout=60)
            answers.append(answer.status_code)
        except httpx.HTTPError:
            answers.append(0)

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(0.5)  # the 20 s request is in the worker
    started = time.monotonic()
    assert server.stop(timeout=30) == 0
    took = time.monotonic() - started
    holder.join(30)
    assert took < 12, f"shutdown took {took:.1f} s with --graceful-shutdown-s 2"  # not 30 + 20
    assert len(answers) == 1  # the held request ended (cut at the limit), it did not hang
