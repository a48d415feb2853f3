"""Instances as Ray actors on a real two-node Ray cluster on this machine (``ray start`` twice).

Ray spreads the instances over both nodes (``/admin/instances`` names each actor's node, and a
stopped gateway kills its actors); stopping one node under load loses no request: its actor's
in-flight batches are retried on the other node and the pool replaces the actor there.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
import zmq.asyncio

ray = pytest.importorskip("ray")

from dlproxy.app import connect_backend  # noqa: E402
from dlproxy.assembly import build_pools, start_pools  # noqa: E402
from dlproxy.bench.cluster import LocalRayCluster  # noqa: E402
from dlproxy.gateway import Gateway, Limits  # noqa: E402
from dlproxy.settings import Settings  # noqa: E402
from dlproxy.types import InferenceRequest  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from serving import Server  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalRayCluster]:
    with LocalRayCluster(["node_a", "node_b"], cpus_per_node=1) as running:
        yield running


def request(i: int, **parameters: object) -> InferenceRequest:
    return InferenceRequest(
        "echo",
        {"text": np.array([f"item {i}".encode()], dtype=object)},
        parameters=dict(parameters),
    )


def test_dlproxy_serve_on_the_cluster_shows_nodes_and_stops_its_actors(
    cluster: LocalRayCluster, tmp_path: Path
) -> None:
    # Runs first: the next test stops node_b.
    server = Server(
        "--admin-loopback",
        "--model", "echo", "--instances", "2", "--backend", "ray",
        "--ray-address", cluster.address, "--ray-num-cpus", "0.5", log=tmp_path / "serve.log",
    ).wait_ready()  # fmt: skip
    try:
        rows = httpx.get(f"{server.url}/admin/instances").json()
        assert sorted(row["node"] for row in rows) == ["node_a", "node_b"]
        actors = [psutil.Process(row["pid"]) for row in rows]
        response = httpx.post(
            f"{server.url}/v2/models/echo/infer",
            json={"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["x"]}]},
        )
        assert response.status_code == 200
        assert response.headers["x-dlproxy-instance"] in {row["id"] for row in rows}
    finally:
        assert server.stop() == 0
    _, alive = psutil.wait_procs(actors, timeout=15)
    assert alive == []  # the gateway killed its actors on the way out


async def test_actors_spread_over_both_nodes_and_a_lost_node_loses_no_request(
    cluster: LocalRayCluster,
) -> None:
    # Half a CPU each: the surviving node (1 CPU) has room for the replacement actor.
    settings = Settings(
        models=["echo"], instances=2, backend="ray", ray_address=cluster.address, ray_num_cpus=0.5
    ).resolved()
    connect_backend(settings)
    context = zmq.asyncio.Context()
    pools = build_pools(settings, context)
    gateway = Gateway(pools, Limits())
    pool = pools[0]
    try:
        await start_pools(pools, 2)
        assert sorted(i.node for i in pool.instances) == ["node_a", "node_b"]  # type: ignore[union-attr]
        assert all(i.state == "ready" and i.pid for i in pool.instances)
        victim = next(i for i in pool.instances if i.node == "node_b")  # type: ignore[union-attr]

        async def client(k: int) -> list[bytes]:
            out = []
            for j in range(30):
                response = await gateway.infer(request(k * 100 + j, delay_ms=5))
                out.append(response.outputs["text"][0])
            return out

        load = asyncio.gather(*(client(k) for k in range(16)))
        for _ in range(200):  # wait until node_b holds work, then lose the node
            if victim.batcher.inflight:
                break
            await asyncio.sleep(0.01)
        assert victim.batcher.inflight > 0
        await asyncio.to_thread(cluster.stop_node, "node_b")
        results = await load
        assert results == [[f"item {k * 100 + j}".encode() for j in range(30)] for k in range(16)]
        assert gateway.retries["echo", "instance_failed"] > 0  # in-flight work was retried
        for _ in range(300):  # the lost actor is replaced, on the node still alive
            if len(pool.instances) == 2 and all(i.state == "ready" for i in pool.instances):
                break
            await asyncio.sleep(0.05)
        assert victim not in pool.instances
        assert [(i.state, i.node) for i in pool.instances] == [  # type: ignore[union-attr]
            ("ready", "node_a"),
            ("ready", "node_a"),
        ]
        assert pool.restarts == 1
        response = await gateway.infer(request(7))
        assert response.outputs["text"][0] == b"item 7"
    finally:
        await gateway.close()
        context.term()
        ray.shutdown()
