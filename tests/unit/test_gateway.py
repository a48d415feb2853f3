"""The data plane in process: Gateway over pools of fake instances (tests/fakes.py), no process.

Cache, coalescing, retries and their budget, hedging and deadlines, each through ``Gateway.infer``
with the real pool, scheduler, batcher and caches; only the worker is replaced.
"""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest

from dlproxy.caching.base import MemoryCache
from dlproxy.caching.tiered import TieredCache
from dlproxy.caching.wire import SharedCache, encode_row
from dlproxy.clock import ManualClock
from dlproxy.errors import (
    BadRequest,
    DeadlineExceeded,
    InstanceFailed,
    ModelNotFound,
    PayloadTooLarge,
    QueryOfDeath,
)
from dlproxy.gateway import Limits, validate
from dlproxy.instances.health import RetryBudget
from dlproxy.types import InferenceRequest, ModelSpec, TensorSpec
from fakes import fake_gateway, request


def lru() -> TieredCache:
    return TieredCache(MemoryCache("lru", 100))


async def test_a_request_is_computed_by_an_instance_and_answered() -> None:
    gateway, instances = await fake_gateway(count=1, coalesce=False)
    response = await gateway.infer(request(1, 2))
    assert response.outputs["embedding"].tolist() == [[2.0] * 4, [4.0] * 4]
    assert response.instance == instances[0].id and response.model_version == "1"
    assert instances[0].batches == [2]
    await gateway.close()


async def test_bad_input_and_unknown_models_are_refused_before_any_instance() -> None:
    gateway, instances = await fake_gateway(count=1)
    wrong = request(1)
    wrong.inputs["x"] = np.ones((1, 3), np.float32)
    with pytest.raises(BadRequest, match=r"input 'x' has shape \[1, 3\]; the model takes"):
        await gateway.infer(wrong)
    unknown = request(1)
    unknown.model = "nope"
    with pytest.raises(ModelNotFound, match="served: fake"):
        await gateway.infer(unknown)
    assert instances[0].batches == []
    await gateway.close()


async def test_a_repeated_item_is_a_cache_hit_and_only_new_items_are_computed() -> None:
    gateway, instances = await fake_gateway(count=1, cache=lru())
    first = await gateway.infer(request(1, 2))
    assert first.cache == "miss"
    again = await gateway.infer(request(2, 1))
    assert again.cache == "l1"
    assert again.outputs["embedding"][:, 0].tolist() == [4.0, 2.0]
    mixed = await gateway.infer(request(1, 3))  # one hit, one computed: the worst level shows
    assert mixed.cache == "miss" and mixed.outputs["embedding"][:, 0].tolist() == [2.0, 6.0]
    assert instances[0].batches == [2, 1]  # the hit never reached the instance
    await gateway.close()


async def test_identical_items_in_flight_are_computed_once() -> None:
    gateway, instances = await fake_gateway(count=1, delay=0.05)
    responses = await asyncio.gather(*(gateway.infer(request(7)) for _ in range(5)))
    assert [r.cache for r in responses].count("miss") == 1
    assert [r.cache for r in responses].count("coalesced") == 4
    assert all(r.outputs["embedding"][0, 0] == 14.0 for r in responses)
    assert instances[0].batches == [1]
    await gateway.close()


async def test_a_failed_instance_is_retried_on_another_one() -> None:
    gateway, instances = await fake_gateway(count=2, coalesce=False)
    instances[0].failing = True
    for i in range(4):  # round robin sends every other request to the failing one first
        response = await gateway.infer(request(i))
        assert response.instance == instances[1].id
    assert gateway.retries["fake", "instance_failed"] == 2
    await gateway.close()


async def test_retries_stop_when_the_budget_is_spent() -> None:
    clock = ManualClock()
    budget = RetryBudget(clock, ratio=0.0, min_per_second=0.1, window=10.0)  # one retry in 10 s
    gateway, instances = await fake_gateway(count=2, coalesce=False, retry_budget=budget)
    for instance in instances:
        instance.failing = True
    with pytest.raises(InstanceFailed):
        await gateway.infer(request(1))
    assert gateway.retries["fake", "instance_failed"] == 1  # one retry, then the error
    with pytest.raises(InstanceFailed):
        await gateway.infer(request(2))
    assert gateway.retries["fake", "instance_failed"] == 1  # no budget left: not retried
    assert budget.statistics().denied == 2
    await gateway.close()


async def test_a_slow_instance_is_hedged_and_the_first_answer_wins() -> None:
    gateway, instances = await fake_gateway(
        count=2, coalesce=False, hedge_after=0.02, instance={"depth": 1, "max_batch": 1}
    )
    slow, fast = instances
    slow.delay = 0.3
    busy = slow.submit(request(100), {})  # holds the slow one's only slot
    response = await asyncio.wait_for(gateway.infer(request(3)), 0.2)  # queued behind it
    assert response.instance == fast.id
    assert response.outputs["embedding"][0, 0] == 6.0
    assert gateway.retries["fake", "hedge"] == 1
    await busy
    await asyncio.sleep(0.01)
    assert slow.batches == [1] and slow.batcher.queued == 0  # the loser was never sent
    await gateway.close()


async def test_a_hedge_that_fails_leaves_the_first_attempt_to_answer() -> None:
    gateway, instances = await fake_gateway(count=2, coalesce=False, hedge_after=0.01)
    slow, broken = instances
    slow.delay = 0.1
    broken.failing = True
    response = await gateway.infer(request(5))
    assert response.instance == slow.id and gateway.retries["fake", "hedge"] == 1
    await gateway.close()


async def test_a_request_past_its_deadline_is_answered_with_504_at_the_deadline() -> None:
    gateway, _ = await fake_gateway(count=1, cache=lru(), delay=1.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(DeadlineExceeded):
        await gateway.infer(request(1, deadline=started + 0.05))
    assert loop.time() - started < 0.5
    await gateway.close()


async def test_close_drains_what_is_in_flight() -> None:
    gateway, instances = await fake_gateway(count=1, delay=0.05)
    pending = asyncio.ensure_future(gateway.infer(request(9)))
    await asyncio.sleep(0.01)
    await gateway.close()
    assert (await pending).outputs["embedding"][0, 0] == 18.0
    assert instances[0].state == "stopped"


async def test_a_coalesced_waiter_keeps_its_own_deadline_not_the_leaders() -> None:
    """#16 item 4: a leader with a 10 ms deadline must not fail the identical item of a client
    that waits without one (the computation lives while anyone wants it)."""
    gateway, _ = await fake_gateway(count=1, delay=0.1, instance={"depth": 1})
    loop = asyncio.get_running_loop()
    busy = asyncio.ensure_future(gateway.infer(request(9)))  # holds the only instance for 0.1 s
    await asyncio.sleep(0)
    leader = asyncio.ensure_future(gateway.infer(request(1, deadline=loop.time() + 0.01)))
    await asyncio.sleep(0)
    waiter = asyncio.ensure_future(gateway.infer(request(1)))
    with pytest.raises(DeadlineExceeded):
        await leader
    answer = await asyncio.wait_for(waiter, 2)
    assert answer.outputs["embedding"][0, 0] == 2.0 and answer.cache == "coalesced"
    await busy
    await gateway.close()


async def test_a_computation_nobody_waits_for_any_more_is_not_sent() -> None:
    gateway, instances = await fake_gateway(count=1, delay=0.1, instance={"depth": 1})
    loop = asyncio.get_running_loop()
    busy = asyncio.ensure_future(gateway.infer(request(9)))
    await asyncio.sleep(0)
    with pytest.raises(DeadlineExceeded):
        await gateway.infer(request(1, deadline=loop.time() + 0.01))
    await busy
    await asyncio.sleep(0.15)
    assert instances[0].batches == [1]  # only the busy request's batch: the expired one was dropped
    await gateway.close()


async def test_a_query_of_death_is_not_retried_and_its_batch_mates_are_served() -> None:
    gateway, instances = await fake_gateway(
        count=3, coalesce=False, instance={"depth": 1, "max_batch": 8}
    )
    for instance in instances:
        instance.poison = 666.0
    busy = [instance.submit(request(-1.0), {}) for instance in instances]  # queue behind these
    answers = asyncio.gather(
        *(gateway.infer(request(v)) for v in (1.0, 666.0, 2.0, 3.0, 4.0, 5.0)),
        return_exceptions=True,
    )
    await asyncio.gather(*busy)
    results = await answers
    poison = results[1]
    assert isinstance(poison, QueryOfDeath)
    assert "retried alone" in str(poison) and "model 'fake'" in str(poison)
    for value, result in zip((1.0, 2.0, 3.0, 4.0, 5.0), results[:1] + results[2:], strict=True):
        assert not isinstance(result, BaseException), result
        assert result.outputs["embedding"][0, 0] == 2 * value
    kills = [size for instance in instances for size in instance.killed_by]
    assert len(kills) == 2 and 1 in kills  # its first batch, then alone: two instances, not three
    await gateway.close()


async def test_a_lone_failure_is_still_retried_once_elsewhere() -> None:
    gateway, instances = await fake_gateway(count=2, coalesce=False)
    instances[0].poison = 1.0  # only this one dies of it: a worker lost for its own reasons
    response = await gateway.infer(request(1.0))
    assert response.instance == instances[1].id
    await gateway.close()


async def test_the_deadline_holds_behind_a_hung_instance_without_cache_or_coalescing() -> None:
    gateway, instances = await fake_gateway(count=1, coalesce=False)
    instances[0].hang = True
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(DeadlineExceeded):
        await gateway.infer(request(1, deadline=started + 0.05))
    assert loop.time() - started < 0.5
    await gateway.close(drain_seconds=0.1)


async def test_parameters_the_model_does_not_read_neither_split_batches_nor_reach_it() -> None:
    gateway, instances = await fake_gateway(
        count=1, cache=lru(), coalesce=False, instance={"depth": 1, "max_batch": 8}
    )
    (instance,) = instances
    assert instance.spec is not None
    instance.spec = dataclasses.replace(instance.spec, parameters=("scale",))
    busy = instance.submit(request(-1.0), {})
    nonces = []
    for n in range(4):
        r = request(float(n))
        r.parameters = {"nonce": n}
        nonces.append(asyncio.ensure_future(gateway.infer(r)))
    await asyncio.sleep(0)  # all four queue behind the busy batch
    await busy
    await asyncio.gather(*nonces)
    assert instance.batches[1:] == [4]  # one batch: the nonces did not split it
    assert instance.parameters[1:] == [{}]  # and never reached the model
    again = request(2.0)
    again.parameters = {"nonce": 99}
    assert (await gateway.infer(again)).cache == "l1"  # nor the cache key
    await gateway.close()


def test_a_request_over_the_work_bound_is_refused_naming_the_limit() -> None:
    spec = ModelSpec(
        "texts", "1", "test", (TensorSpec("text", "BYTES", (-1,)),), (), 0, unit_bytes=1024
    )
    texts = np.empty(2, dtype=object)
    texts[:] = [b"a" * 5000, b"b" * 5000]  # 5 units each
    long = InferenceRequest("texts", {"text": texts})
    with pytest.raises(
        PayloadTooLarge, match=r"10 units of work .* limit is 8 .*--max-request-units"
    ):
        validate(long, spec, Limits(max_request_units=8))
    validate(long, spec, Limits(max_request_units=10))  # at the bound: admitted


class DictLevel(SharedCache):
    """A shared level in a dict: what another gateway (another model file) may have written."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[bytes, bytes] = {}

    async def _fetch(self, keys: list[bytes]) -> list[bytes | None]:
        return [self.values.get(key) for key in keys]

    async def _store(self, items: list[tuple[bytes, bytes]]) -> None:
        self.values.update(items)

    async def _remove(self, key: bytes) -> None:
        self.values.pop(key, None)

    async def _disconnect(self) -> None:
        pass


async def test_a_shared_row_that_does_not_fit_the_model_is_a_miss_not_an_answer() -> None:
    level = DictLevel()
    gateway, _ = await fake_gateway(count=1, cache=TieredCache(None, level), coalesce=False)
    assert (await gateway.infer(request(1.0))).cache == "miss"
    (key,) = level.values
    level.values[key] = encode_row({"embedding": np.zeros((1, 3), np.float32)})  # 3 wide, not 4
    again = await gateway.infer(request(1.0))
    assert again.cache == "miss" and again.outputs["embedding"].tolist() == [[2.0] * 4]
    assert (await gateway.infer(request(1.0))).cache == "l2"  # the recomputed row replaced it
    await gateway.close()


async def test_hedges_draw_on_the_retry_budget() -> None:
    budget = RetryBudget(ManualClock(), ratio=0.0, min_per_second=0.1, window=10.0)  # one
    gateway, _ = await fake_gateway(
        count=2, delay=0.05, coalesce=False, hedge_after=0.001, retry_budget=budget
    )
    await asyncio.gather(*(gateway.infer(request(float(i))) for i in range(4)))
    assert gateway.retries["fake", "hedge"] == 1  # a slowdown does not double the load
    assert budget.statistics().denied == 3
    await gateway.close()
