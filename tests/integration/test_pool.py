"""A pool of real echo worker processes: failover when one is killed, and live add/remove."""

from __future__ import annotations

import asyncio
import os
import signal

import numpy as np
import zmq.asyncio

from dlproxy.assembly import build_pools, start_pools
from dlproxy.gateway import Gateway, Limits
from dlproxy.settings import Settings
from dlproxy.types import InferenceRequest


def request(i: int, **parameters: object) -> InferenceRequest:
    return InferenceRequest(
        "echo",
        {"text": np.array([f"item {i}".encode()], dtype=object)},
        parameters=dict(parameters),
    )


async def test_killing_a_worker_under_load_fails_no_request() -> None:
    context = zmq.asyncio.Context()
    pools = build_pools(Settings(models=["echo"], instances=2, threads=1), context)
    await start_pools(pools, 2)
    gateway = Gateway(pools, Limits())
    pool = pools[0]
    victim = pool.instances[0]
    try:

        async def client(k: int) -> list[bytes]:
            out = []
            for j in range(40):
                response = await gateway.infer(request(k * 100 + j, delay_ms=5))
                out.append(response.outputs["text"][0])
            return out

        load = asyncio.gather(*(client(k) for k in range(16)))
        await asyncio.sleep(0.1)
        assert victim.pid is not None
        os.kill(victim.pid, signal.SIGKILL)
        results = await load
        assert results == [[f"item {k * 100 + j}".encode() for j in range(40)] for k in range(16)]
        for _ in range(200):  # the dead instance is replaced by a fresh process
            if len(pool.instances) == 2 and all(i.state == "ready" for i in pool.instances):
                break
            await asyncio.sleep(0.05)
        assert victim not in pool.instances
        assert [i.state for i in pool.instances] == ["ready", "ready"]
        assert pool.restarts == 1
    finally:
        await gateway.close()
        context.term()


async def test_instances_are_added_and_drained_without_losing_requests() -> None:
    context = zmq.asyncio.Context()
    pools = build_pools(Settings(models=["echo"], instances=1, threads=1), context)
    await start_pools(pools, 1)
    gateway = Gateway(pools, Limits())
    pool = pools[0]
    try:
        load = asyncio.gather(*(gateway.infer(request(i, delay_ms=20)) for i in range(200)))
        await pool.scale_to(3)
        assert len(pool.instances) == 3
        await pool.scale_to(1)
        responses = await load
        assert [r.outputs["text"][0] for r in responses] == [
            f"item {i}".encode() for i in range(200)
        ]
        assert len(pool.instances) == 1
    finally:
        await gateway.close()
        context.term()


async def test_a_hung_worker_is_killed_and_its_requests_fail_over() -> None:
    context = zmq.asyncio.Context()
    settings = Settings(models=["echo"], instances=2, threads=1, hang_timeout_s=1.0)
    pools = build_pools(settings, context)
    await start_pools(pools, 2)
    gateway = Gateway(pools, Limits())
    pool = pools[0]
    try:
        hung = pool.instances[0]
        assert hung.pid is not None
        os.kill(hung.pid, signal.SIGSTOP)  # the process stops answering, heartbeats included
        responses = await asyncio.gather(*(gateway.infer(request(i)) for i in range(20)))
        assert [r.outputs["text"][0] for r in responses] == [
            f"item {i}".encode() for i in range(20)
        ]
        for _ in range(200):
            if hung not in pool.instances and len(pool.instances) == 2:
                break
            await asyncio.sleep(0.05)
        assert hung not in pool.instances
        assert hung.hung == 1
    finally:
        await gateway.close()
        context.term()
