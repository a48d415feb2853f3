"""The live autoscaler over pools that come and go (models loaded at run time), each scaled by
its own plan; in process, over fake instances (tests/fakes.py)."""

from __future__ import annotations

import asyncio
from collections import Counter

from dlproxy.autoscaler import Controller
from dlproxy.autoscaling.limits import Limits, ScalingPlan
from dlproxy.instances.pool import InstancePool
from fakes import fake_pool, request

EAGER = ScalingPlan(
    "queue_length",
    {"target": 1.0, "stable_window": 0.05, "panic_window": 0.05},
    Limits(min_instances=1, max_instances=3, down_cooldown=60.0),
)


async def busy(pool: InstancePool, count: int) -> list[asyncio.Future[object]]:
    """``count`` requests queued on the pool's slow instance(s)."""
    return [asyncio.ensure_future(pool.instances[0].submit(request(i), {})) for i in range(count)]


async def test_each_pool_follows_its_own_plan_and_pools_loaded_later_are_scaled() -> None:
    planned, _ = await fake_pool(count=1, delay=0.2, max_queue_items=100)
    planned.scaling = EAGER
    unplanned, _ = await fake_pool(count=1, delay=0.2, max_queue_items=100)
    pools = [planned, unplanned]
    controller = Controller(lambda: list(pools), Counter(), Counter(), interval=0.01)
    running = asyncio.ensure_future(controller.run())
    waiting = await busy(planned, 20) + await busy(unplanned, 20)
    later, _ = await fake_pool(count=1, delay=0.2, max_queue_items=100, version="2")
    later.scaling = EAGER
    pools.append(later)  # loaded at run time: scaled from its first tick on
    waiting += await busy(later, 20)
    for _ in range(100):
        if len(planned.instances) == 3 and len(later.instances) == 3:
            break
        await asyncio.sleep(0.02)
    assert len(planned.instances) == 3 and len(later.instances) == 3  # max_instances
    assert len(unplanned.instances) == 1  # no plan: left alone
    assert controller.decisions["fake", "up"] >= 2
    running.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    for pool in pools:
        await pool.close()
