"""Instances as Ray actors on a real two-node Ray cluster on this machine (``ray start`` twice).

Ray spreads the instances over both nodes; stopping one node under load loses no request: its
actor's in-flight batches are retried on the other node and the pool replaces the actor there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest
import zmq.asyncio

ray = pytest.importorskip("ray")

from dlproxy.app import build_pools, connect_backend, start_pools  # noqa: E402
from dlproxy.bench.cluster import LocalRayCluster  # noqa: E402
from dlproxy.gateway import Gateway, Limits  # noqa: E402
from dlproxy.settings import Settings  # noqa: E402
from dlproxy.types import InferenceRequest  # noqa: E402

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
