"""Remote upstreams: real ``dlproxy serve --model echo`` servers behind an in-process gateway.

The upstreams are separate processes on 127.0.0.1; the tests kill, pause and restart them (on the
same port) and check that the gateway's requests are answered throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import zmq.asyncio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: serving

from dlproxy.assembly import build_pools, start_pools
from dlproxy.errors import BadRequest, ModelError
from dlproxy.gateway import Gateway, Limits
from dlproxy.instances.upstream import UpstreamInstance
from dlproxy.settings import Settings
from dlproxy.types import InferenceRequest
from serving import Server

pytestmark = pytest.mark.slow
# A small per-request limit on the upstreams: the front must not batch beyond it.
ECHO = ("--model", "echo", "--instances", "1", "--threads", "1", "--max-items", "8")


class Upstream(Server):
    """An echo server that can be started again on the same port, as a restarted server would."""

    def __init__(self, log: Path) -> None:
        self.log_path = log
        super().__init__(*ECHO, log=log)

    def restart(self) -> Upstream:
        self.stop()
        command = [sys.executable, "-m", "dlproxy", "serve", "--port", str(self.port), *ECHO]
        self._log = open(self.log_path, "ab")  # closed by stop()
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        return self.wait_ready()

    def kill(self) -> None:
        """SIGKILL the server and its workers (a killed server's workers exit on their own, but
        a test must not rely on that to clean up)."""
        workers = self.worker_pids()
        self.process.kill()
        self.process.wait()
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def upstreams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Upstream]]:
    logs = tmp_path_factory.mktemp("upstreams")
    servers = [Upstream(logs / "u1.log"), Upstream(logs / "u2.log")]
    try:
        yield [server.wait_ready() for server in servers]
    finally:
        for server in servers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(server.process.pid, signal.SIGCONT)
            server.stop()


@contextlib.asynccontextmanager
async def front(upstreams: list[Upstream], **settings: object) -> AsyncIterator[Gateway]:
    """A gateway over the upstreams (and local workers, when ``instances`` is given)."""
    context = zmq.asyncio.Context()
    values: dict[str, object] = {
        "models": ["echo"],
        "health_interval_s": 0.2,
        "max_batch": 8,  # the upstreams' --max-items
        **settings,
    }
    config = Settings(upstreams=[u.url for u in upstreams], **values)  # type: ignore[arg-type]
    pools = build_pools(config, context)
    await start_pools(pools, config.instances or 0)
    hedge_after = config.hedge_ms / 1000 if config.hedge_ms else None
    gateway = Gateway(pools, Limits(), hedge_after=hedge_after)
    try:
        yield gateway
    finally:
        await gateway.close()
        context.term()


def request(i: int, **parameters: object) -> InferenceRequest:
    return InferenceRequest(
        "echo",
        {
            "text": np.array([f"item {i}".encode()], dtype=object),
            "x": np.array([[i, -i]], dtype=np.float32),
        },
        parameters=dict(parameters),
    )


def remotes(gateway: Gateway) -> list[UpstreamInstance]:
    instances = gateway.pool("echo").instances
    assert all(isinstance(i, UpstreamInstance) for i in instances)
    return instances  # type: ignore[return-value]


async def wait_for(condition: Callable[[], bool], within: float = 10.0) -> float:
    """Seconds until ``condition()`` holds (fails the test after ``within`` s)."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < within, "timed out"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_requests_are_batched_to_both_upstreams_and_answered(
    upstreams: list[Upstream],
) -> None:
    async with front(upstreams) as gateway:
        pool = gateway.pool("echo")
        assert pool.spec is not None and pool.spec.platform == "python"
        assert [i.reference for i in pool.instances] == [u.url for u in upstreams]
        assert [i.state for i in pool.instances] == ["ready", "ready"]
        responses = await asyncio.gather(*(gateway.infer(request(i)) for i in range(300)))
        for i, response in enumerate(responses):
            assert response.outputs["text"].tolist() == [f"item {i}".encode()]
            assert response.outputs["x"].tolist() == [[i, -i]]
            assert response.outputs["x"].dtype == np.float32
        used = {r.instance for r in responses}
        assert used == {i.id for i in pool.instances}
        stats = [i.batcher.statistics() for i in pool.instances]
        assert sum(s.items for s in stats) == 300
        assert sum(s.batches for s in stats) < 300  # one KServe request carried several
        assert all(i.latency_ewma > 0 for i in pool.instances)


async def test_an_answer_refused_by_the_upstream_is_the_clients_error(
    upstreams: list[Upstream],
) -> None:
    async with front(upstreams) as gateway:
        rows = np.arange(18, dtype=np.float32).reshape(9, 2)  # distinct, so not coalesced
        too_many = InferenceRequest("echo", {"x": rows})
        with pytest.raises(BadRequest, match="limit is 8"):  # the upstream's own limit
            await gateway.infer(too_many)
        for i in range(8):
            # the upstream's safe message: its model's own error text stays in its log
            with pytest.raises(ModelError, match="the model failed on this request"):
                await gateway.infer(request(i, fail=True))
        assert sum(gateway.retries.values()) == 0  # neither is retried elsewhere
        assert [i.state for i in remotes(gateway)] == ["ready", "ready"]  # nor ejects


async def test_a_killed_upstream_fails_no_request_and_is_back_once_restarted(
    upstreams: list[Upstream],
) -> None:
    async with front(upstreams) as gateway:
        victim, survivor = remotes(gateway)
        stop = asyncio.Event()

        async def client(k: int) -> int:
            sent = 0
            while not stop.is_set():
                response = await gateway.infer(request(k * 10_000 + sent, delay_ms=2))
                assert response.outputs["text"].tolist() == [f"item {k * 10_000 + sent}".encode()]
                sent += 1
            return sent

        load = asyncio.gather(*(client(k) for k in range(12)))
        await asyncio.sleep(0.5)
        upstreams[0].kill()
        out = await wait_for(lambda: victim.state in ("ejected", "unhealthy"), within=5)
        await wait_for(lambda: victim.state == "unhealthy", within=5)
        await asyncio.sleep(0.5)
        items_while_down = victim.batcher.statistics().items
        stop.set()
        sent = await load  # every request answered: the gateway raised nothing
        assert sum(sent) > 100 and out < 3
        assert sum(gateway.retries.values()) >= 1
        assert victim.outlier.ejections + (victim.state == "unhealthy") >= 1

        await asyncio.to_thread(upstreams[0].restart)
        await wait_for(lambda: victim.state == "ready", within=5)
        responses = await asyncio.gather(*(gateway.infer(request(i)) for i in range(100)))
        assert {r.instance for r in responses} == {victim.id, survivor.id}
        assert victim.batcher.statistics().items > items_while_down


async def test_a_stalled_upstream_is_hedged_to_the_other(upstreams: list[Upstream]) -> None:
    # Health checks far apart: only hedging can answer quickly while u1 is paused.
    async with front(upstreams, hedge_ms=50, health_interval_s=30, policy="round_robin") as gateway:
        _, other = remotes(gateway)
        os.kill(upstreams[0].process.pid, signal.SIGSTOP)
        try:
            for i in range(6):
                started = time.monotonic()
                response = await gateway.infer(request(i))
                assert response.outputs["text"].tolist() == [f"item {i}".encode()]
                assert time.monotonic() - started < 2.0
            assert (
                gateway.retries["echo", "hedge"] >= 2
            )  # every other request went to the paused one first
            assert other.batcher.statistics().items >= 6
        finally:
            os.kill(upstreams[0].process.pid, signal.SIGCONT)


async def test_local_workers_and_an_upstream_serve_side_by_side(
    upstreams: list[Upstream],
) -> None:
    async with front(upstreams[1:], instances=1, threads=1) as gateway:
        pool = gateway.pool("echo")
        assert sorted(i.id[0] for i in pool.instances) == ["u", "w"]
        responses = await asyncio.gather(*(gateway.infer(request(i)) for i in range(200)))
        assert {r.instance[0] for r in responses} == {"w", "u"}
        await pool.scale_to(2)  # scaling counts (and removes) local workers only
        assert sorted(i.id[0] for i in pool.instances) == ["u", "w", "w"]
        await pool.scale_to(1)
        assert sorted(i.id[0] for i in pool.instances) == ["u", "w"]


async def test_an_upstream_down_at_start_does_not_stop_the_gateway_and_joins_later(
    upstreams: list[Upstream], tmp_path: Path
) -> None:
    late = Upstream(tmp_path / "late.log")
    late.kill()  # down when the gateway starts
    async with front([upstreams[0], late]) as gateway:
        live, down = remotes(gateway)
        assert live.state == "ready" and down.state == "unhealthy"
        for i in range(4):
            response = await gateway.infer(request(i))
            assert response.instance == live.id
        late.restart()
        await wait_for(lambda: down.state == "ready")
        served = {(await gateway.infer(request(i))).instance for i in range(10, 30)}
        assert down.id in served
    late.stop()

