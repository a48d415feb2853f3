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


async def test_attached_servers_are_not_counted_and_a_failing_tick_does_not_stop_scaling() -> None:
    pool, _ = await fake_pool(count=1, delay=0.2, max_queue_items=100)
    pool.scaling = ScalingPlan(EAGER.policy, EAGER.options, Limits(1, 2, down_cooldown=60.0))
    remote, _ = await fake_pool(count=1)
    await pool.attach(remote.instances[0])  # a remote server: scale_to does not count it
    broken, _ = await fake_pool(count=1)
    broken.scaling = ScalingPlan("no_such_policy", {}, EAGER.limits)  # its every tick raises
    controller = Controller(lambda: [broken, pool], Counter(), Counter(), interval=0.01)
    running = asyncio.ensure_future(controller.run())
    waiting = await busy(pool, 20)
    for _ in range(100):
        if len(pool.made()) == 2:
            break
        await asyncio.sleep(0.02)
    assert len(pool.made()) == 2  # max_instances of its own, past the broken pool's ticks
    assert not running.done()
    running.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    for each in (pool, broken, remote):
        await each.close()
