"""An in-process instance that keeps the ``Instance`` contract, for tests of the data plane.

``FakeInstance`` is a real ``BatchedInstance`` (the real Batcher, queue and admission) whose
channel is a coroutine on the test's event loop instead of a worker process: it computes
``embedding = x * factor`` (FP32 [n, d], factor 2 unless told) after ``delay`` seconds, or fails
the batch as a dead instance would (``failing``: every batch, before it is computed; ``poison``:
a batch holding that value, as a worker it killed), or never answers (``hang``). Tests steer it
through its attributes and read what it computed in ``batches``.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import numpy as np

from dlproxy import protocol
from dlproxy.batching.policy import FixedBatching
from dlproxy.errors import InstanceFailed
from dlproxy.gateway import Gateway, Limits
from dlproxy.instances.base import BatchedInstance, FailureHandler, InstanceOptions, ignore_failure
from dlproxy.instances.pool import InstancePool
from dlproxy.scheduling.base import create_policy
from dlproxy.types import InferenceRequest, ModelSpec, TensorSpec

MODEL = "fake"
WIDTH = 4
SPEC = ModelSpec(
    name=MODEL,
    version="1",
    platform="test",
    inputs=(TensorSpec("x", "FP32", (-1, WIDTH)),),
    outputs=(TensorSpec("embedding", "FP32", (-1, WIDTH)),),
    max_batch_size=64,
)
_numbers = itertools.count(1)


class FakeInstance(BatchedInstance):
    """Computes in process; ``delay`` (s) per batch, ``failing`` makes every batch fail."""

    def __init__(
        self,
        options: InstanceOptions,
        on_failure: FailureHandler = ignore_failure,
        *,
        delay: float = 0.0,
        factor: float = 2.0,
    ) -> None:
        super().__init__(options, f"f{next(_numbers)}", on_failure)
        self.factor = factor
        self.reference = "fake"
        self.threads = 1
        self.state = "starting"
        self.delay = delay
        self.failing = False
        self.poison: float | None = None  # a batch holding a row of this value kills the instance
        self.hang = False  # batches are never answered (a stopped worker), until the deadline
        self.start_delay = 0.0  # s its model takes to load
        self.start_error: Exception | None = None  # raised by start, as a model failing to load
        self.batches: list[int] = []  # the size of every batch computed, in order
        self.killed_by: list[int] = []  # the size of every batch the poison row failed
        self.parameters: list[dict[str, Any]] = []  # the parameters of every batch sent
        self.load = protocol.Load()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await asyncio.sleep(self.start_delay)
        if self.start_error is not None:
            self.state = "failed"
            raise self.start_error
        self._adopt(SPEC)
        self.state = "ready"

    async def stop(self, drain: bool = True, drain_seconds: float = 30.0) -> None:
        self.state = "draining"
        await self._drain(drain, drain_seconds)
        for task in self._tasks:
            task.cancel()
        self.state = "stopped"

    def _send(
        self, inputs: dict[str, Any], parameters: dict[str, Any]
    ) -> asyncio.Future[protocol.Result | protocol.Failure]:
        future: asyncio.Future[protocol.Result | protocol.Failure] = (
            asyncio.get_running_loop().create_future()
        )
        self.parameters.append(parameters)
        task = asyncio.create_task(self._compute(inputs, future))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return future

    async def _compute(
        self, inputs: dict[str, Any], future: asyncio.Future[protocol.Result | protocol.Failure]
    ) -> None:
        await asyncio.sleep(self.delay)
        if future.done():
            return
        if self.failing:
            future.set_exception(InstanceFailed(f"instance {self.id} died"))
            return
        x = inputs["x"]
        if self.poison is not None and (x == self.poison).any():
            self.killed_by.append(len(x))
            future.set_exception(InstanceFailed(f"instance {self.id} died", held=True))
            return
        if self.hang:
            await asyncio.Event().wait()
        self.batches.append(len(x))
        outputs = {"embedding": protocol.to_wire(np.asarray(x, np.float32) * self.factor)}
        future.set_result(protocol.Result(0, outputs, self.load))


def options(max_queue_items: int = 100, max_batch: int = 8, **extra: Any) -> InstanceOptions:
    return InstanceOptions(
        max_queue_items=max_queue_items,
        batching=lambda: FixedBatching(max_batch, 0.001),
        **extra,
    )


def unstarted_pool(
    name: str = MODEL,
    version: str = "",
    policy: str = "round_robin",
    delay: float = 0.0,
    factor: float = 2.0,
    **option: Any,
) -> tuple[InstancePool, list[FakeInstance]]:
    """A pool of fake instances, none started yet (``pool.add()`` starts one); with a
    ``version``, served as that version of ``name`` (as a repository version is)."""
    made: list[FakeInstance] = []
    if version or name != MODEL:
        option["served_as"] = (name, version)

    def factory(on_failure: FailureHandler) -> FakeInstance:
        made.append(FakeInstance(options(**option), on_failure, delay=delay, factor=factor))
        return made[-1]

    return InstancePool(name, create_policy(policy), factory, version=version), made


async def fake_pool(
    count: int = 2,
    policy: str = "round_robin",
    delay: float = 0.0,
    version: str = "",
    factor: float = 2.0,
    **option: Any,
) -> tuple[InstancePool, list[FakeInstance]]:
    """A started pool of ``count`` fake instances (``option``: ``options``' keywords); with a
    ``version``, served as that version of the model (as a repository version is)."""
    pool, made = unstarted_pool(MODEL, version, policy, delay, factor, **option)
    for _ in range(count):
        await pool.add()
    return pool, made


async def fake_gateway(
    count: int = 2,
    policy: str = "round_robin",
    delay: float = 0.0,
    instance: dict[str, Any] | None = None,
    **gateway: Any,
) -> tuple[Gateway, list[FakeInstance]]:
    """A started Gateway over one pool of fakes (``instance``: ``options``' keywords)."""
    pool, made = await fake_pool(count, policy, delay, **(instance or {}))
    instance = Gateway([pool], Limits(), **gateway)
    instance.started = True
    return instance, made


def request(*rows: float, deadline: float | None = None) -> InferenceRequest:
    """One item per value: row ``i`` is ``[v, v, v, v]``."""
    x = np.repeat(np.array(rows, np.float32).reshape(-1, 1), WIDTH, axis=1)
    return InferenceRequest(MODEL, {"x": x}, deadline=deadline)
