"""The load generator against a real tiny HTTP server (a test double of the server, on 127.0.0.1).

The server runs its own event loop in a thread, so the client under test really waits on a socket.
Bounds are wide on purpose: these tests share two cores with everything else on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from dlproxy.bench import command
from dlproxy.bench.inputs import UniqueInputs
from dlproxy.bench.loadgen import LoadSpec, Recording, encode_body, run_load

BODY = b'{"outputs":[{"name":"text","shape":[1],"datatype":"BYTES","data":["ok"]}]}'


class FakeServer:
    """Answers KServe infer with a fixed body, 503 on every ``fail_every``-th request."""

    def __init__(self, delay: float = 0.0, fail_every: int = 10) -> None:
        self.delay = delay
        self.fail_every = fail_every
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.bodies: list[bytes] = []
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    async def _infer(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            body = await request.read()
            if len(self.bodies) < 5:
                self.bodies.append(body)
            self.requests += 1
            number = self.requests
            if self.delay:
                await asyncio.sleep(self.delay)
            status = 503 if number % self.fail_every == 0 else 200
            headers = {"X-Dlproxy-Instance": f"w{number % 2}", "X-Dlproxy-Cache": "miss"}
            return web.Response(body=BODY, status=status, headers=headers)
        finally:
            self.in_flight -= 1

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v2/models/{model}/infer", self._infer)
        app.router.add_post("/v1/embeddings", self._infer)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    def __enter__(self) -> FakeServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer(delay=0.002) as running:
        yield running


def _run(spec: LoadSpec) -> Recording:
    return asyncio.run(run_load(spec, UniqueInputs(seed=spec.seed)))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_closed_loop_counts_errors_and_never_exceeds_concurrency(server: FakeServer) -> None:
    rec = _run(LoadSpec(url=server.url, model="echo", concurrency=4, duration=1.0, warmup=0.2))
    requests = int(rec.status.size)
    failed = int((rec.status == 503).sum())
    assert requests >= 50
    assert set(rec.status.tolist()) == {200, 503}
    assert rec.errors == {"503": failed}
    assert abs(failed - requests / 10) <= 5  # every 10th request, give or take the window edges
    assert 2 <= server.max_in_flight <= 4
    assert server.requests > requests  # the warm-up was sent but not counted
    assert sum(rec.instances.values()) == requests
    assert rec.cache == {"miss": requests}
    assert (rec.latency_s >= 0.002).all()
    assert rec.start_s.min() >= 0.0
    assert rec.start_s.max() < 1.0


def test_bodies_follow_the_protocol(server: FakeServer) -> None:
    _run(LoadSpec(url=server.url, model="m", concurrency=1, duration=0.2, warmup=0, items=3))
    tensor = json.loads(server.bodies[0])["inputs"][0]
    assert (tensor["name"], tensor["shape"], tensor["datatype"]) == ("text", [3], "BYTES")
    assert len(set(tensor["data"])) == 3
    assert json.loads(encode_body("openai", "m", "text", ["a"])) == {"model": "m", "input": "a"}
    assert json.loads(encode_body("openai", "m", "text", ["a", "b"]))["input"] == ["a", "b"]
    triton = json.loads(encode_body("kserve", "m", "text", ["a", "b"], (1,)))["inputs"][0]
    assert (triton["shape"], triton["data"]) == ([2, 1], ["a", "b"])  # Triton's [N, 1] BYTES


def test_openai_protocol_posts_embeddings(server: FakeServer) -> None:
    spec = LoadSpec(
        url=server.url, model="m", protocol="openai", concurrency=2, duration=0.3, warmup=0
    )
    rec = _run(spec)
    assert rec.status.size > 0
    assert json.loads(server.bodies[0])["model"] == "m"


def test_open_loop_honours_the_rate(server: FakeServer) -> None:
    rec = _run(LoadSpec(url=server.url, model="echo", rate=200, duration=1.5, warmup=0, seed=7))
    requests = int(rec.status.size)
    assert 200 <= requests <= 400  # Poisson mean 300, sd 17; the schedule is fixed by the seed
    assert requests == rec.offered
    assert rec.dropped == 0


def test_open_loop_schedule_does_not_wait_for_a_slow_server() -> None:
    with FakeServer(delay=0.5, fail_every=10**9) as slow:
        rec = _run(LoadSpec(url=slow.url, model="echo", rate=100, duration=1.0, warmup=0, seed=1))
    # A closed loop would manage a handful; the open loop keeps sending about 100 per second.
    assert rec.status.size >= 60
    assert slow.max_in_flight >= 20
    assert (rec.latency_s >= 0.5).all()


def test_open_loop_drops_beyond_max_outstanding() -> None:
    with FakeServer(delay=0.5, fail_every=10**9) as slow:
        spec = LoadSpec(
            url=slow.url, model="echo", rate=100, duration=1.0, warmup=0, max_outstanding=5, seed=1
        )
        rec = _run(spec)
    assert slow.max_in_flight <= 5
    assert rec.dropped > 0
    assert rec.status.size + rec.dropped == rec.offered


def test_connection_errors_are_status_zero_by_exception_class() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    rec = _run(LoadSpec(url=url, model="echo", concurrency=2, duration=0.3, warmup=0))
    assert rec.status.size > 0
    assert set(rec.status.tolist()) == {0}
    assert list(rec.errors) == ["0:ClientConnectorError"]


def test_progress_is_reported(server: FakeServer) -> None:
    seen: list[float] = []
    spec = LoadSpec(url=server.url, model="echo", concurrency=2, duration=0.6, warmup=0.2)
    asyncio.run(run_load(spec, UniqueInputs(), lambda p: seen.append(p.elapsed)))
    assert len(seen) >= 3
    assert seen[-1] == pytest.approx(0.8)


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_command_writes_json_and_plot(server: FakeServer, tmp_path: Path) -> None:
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    args = _parse(
        server.url,
        "--model=echo",
        "--concurrency=2",
        "--duration=0.5",
        "--warmup=0.1",
        "--inputs=zipf:1.1:50",
        f"--json={out}",
        f"--plot={png}",
    )
    assert command.run(args) == 0
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["ok"] > 0
    assert data["inputs"] == "zipf:1.1:50"
    assert data["errors_by_status"].keys() <= {"503"}
    assert png.stat().st_size > 0


@pytest.mark.parametrize(
    "argv",
    [
        ("--model=echo",),  # no URL
        ("http://127.0.0.1:1",),  # no model
        ("127.0.0.1:1", "--model=echo"),  # no scheme
        ("http://127.0.0.1:1", "--model=echo", "--inputs=nope"),
        ("http://127.0.0.1:1", "--model=echo", "--concurrency=0"),
    ],
)
def test_command_refuses_bad_arguments(argv: tuple[str, ...]) -> None:
    assert command.run(_parse(*argv)) == 2


def test_rate_and_concurrency_are_exclusive() -> None:
    with pytest.raises(SystemExit):
        _parse("http://x", "--model=m", "--rate=1", "--concurrency=2")


class _FakeOffline:
    def to_dict(self) -> dict[str, object]:
        return {"model": "echo", "throughput": {"1": 10.0, "8": 50.0}, "best_batch_size": 8}


def test_offline_calls_measure_offline_and_writes_json(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[tuple[str, dict[str, object]]] = []

    def fake(reference: str, **options: object) -> _FakeOffline:
        calls.append((reference, options))
        return _FakeOffline()

    monkeypatch.setattr("dlproxy.bench.offline.measure_offline", fake)
    out = tmp_path / "offline.json"
    assert command.run(_parse("--offline=echo", "--threads=2", f"--json={out}")) == 0
    assert calls == [("echo", {"threads": 2})]
    assert json.loads(out.read_text(encoding="utf-8"))["best_batch_size"] == 8
