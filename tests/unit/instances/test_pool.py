"""The pool's upkeep in process (fake instances): a replacement that fails to start."""

from __future__ import annotations

import asyncio

from dlproxy.instances.base import FailureHandler
from dlproxy.instances.pool import InstancePool
from dlproxy.scheduling.base import create_policy
from dlproxy.types import InferenceRequest
from fakes import FakeInstance, options


async def test_a_replacement_that_fails_to_start_is_retried_with_back_off_and_shown_failed() -> (
    None
):
    made: list[FakeInstance] = []

    def factory(on_failure: FailureHandler) -> FakeInstance:
        made.append(FakeInstance(options(), on_failure))
        if len(made) in (2, 3):  # the first two replacements fail to load
            made[-1].start_error = RuntimeError("the model file is being rewritten")
        return made[-1]

    pool = InstancePool("fake", create_policy("round_robin"), factory, restart_delay=0.02)
    await pool.add()
    first = made[0]
    first.state = "failed"
    first.on_failure(first, [])  # it died
    seen: set[str] = set()
    for _ in range(200):
        await asyncio.sleep(0.01)
        seen.update(i.state for i in pool.instances)
        if len(made) == 4 and pool.ready:
            break
    assert len(made) == 4 and pool.ready  # retried until one started
    assert "failed" in seen  # shown failed between attempts
    assert pool.restarts == 1 and pool.failed_starts == 2
    assert [i.state for i in pool.instances] == ["ready"]
    assert "the model file is being rewritten" in pool.last_start_error
    assert pool.items_by_instance == {}  # no metric series for attempts that computed nothing
    await pool.close()


async def test_no_retry_outlives_the_pool() -> None:
    def factory(on_failure: FailureHandler) -> FakeInstance:
        instance = FakeInstance(options(), on_failure)
        instance.start_error = RuntimeError("never loads")
        return instance

    pool = InstancePool("fake", create_policy("round_robin"), factory, restart_delay=0.01)
    dead = FakeInstance(options(), pool._on_failure)
    pool.instances.append(dead)
    dead.on_failure(dead, [])
    await asyncio.sleep(0.1)
    await pool.close()
    count = pool.failed_starts
    await asyncio.sleep(0.1)
    assert pool.failed_starts == count  # cancelled with the pool: no attempt after close


async def test_in_panic_the_pool_routes_to_instances_health_took_out() -> None:
    pool = InstancePool(
        "fake", create_policy("round_robin"), lambda on_failure: FakeInstance(options())
    )
    remotes = [FakeInstance(options()) for _ in range(3)]
    for remote in remotes:
        await pool.attach(remote)  # remote servers: the only ones health can take out
    remotes[0].state = "ejected"
    request = InferenceRequest("fake", {})
    assert {pool.choose(request).id for _ in range(6)} == {remotes[1].id, remotes[2].id}
    assert pool.panic_routed == 0
    remotes[1].state = "unhealthy"  # one healthy of three: health is more likely wrong
    assert {pool.choose(request).id for _ in range(6)} == {r.id for r in remotes}
    assert pool.panic_routed == 6
    await pool.close()
