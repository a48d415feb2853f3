"""The one contract every kind of instance (worker process, Ray actor, remote server) keeps.

An instance is a batch queue (``Batcher``) in front of something that computes batches. The pool,
the gateway, the scheduler, the autoscaler and the admin routes see only ``Instance``; each kind is
built from one ``InstanceOptions`` plus what only it needs (a zmq context, a Ray CPU count, an
HTTP client), and takes the pool's failure callback at construction.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from dlproxy import protocol
from dlproxy.batching.batcher import Batcher, Outputs, Pending
from dlproxy.batching.policy import BatchingPolicy
from dlproxy.types import InferenceRequest, InstanceView, ModelSpec

FailureHandler = Callable[[Any, list[Pending]], None]
"""Called by an instance that died or hung, with the queued requests it held (the pool moves
them to another instance and replaces the dead one)."""


def ignore_failure(instance: Any, orphans: list[Pending]) -> None:
    """The failure handler of an instance nobody replaces (its orphans were failed already)."""


@dataclass(frozen=True, slots=True)
class InstanceOptions:
    """How one instance queues and batches, and when it counts as failed: the same for every kind.

    ``batching`` makes the instance's own batch-limit policy (an adaptive one is stateful)."""

    max_queue_items: int
    batching: Callable[[], BatchingPolicy]
    depth: int = 2
    weight: float = 1.0
    name: str | None = None
    max_queue_wait: float | None = None
    start_timeout: float = 300.0
    hang_timeout: float = 30.0
    heartbeat_timeout: float = 5.0
    served_as: tuple[str, str] | None = None
    """The name and version the model is served as (a repository entry), else its own."""
    model_options: str = ""
    """A Python model's options (JSON, from its repository ``model.json``): given to ``setup``."""
    by_length: bool = True
    """``Batcher.by_length``."""
    fair: bool = True
    """``Batcher.fair``."""
    urgent_max_batch: int = 0
    """``Batcher.urgent_max_batch``."""
    client_weights: dict[str, float] = field(default_factory=dict)
    """``Batcher.client_weights``."""
    max_batch_tokens: int = 0
    """``Batcher.max_batch_tokens``."""
    borrow_threads: int = 0
    """Intra-op threads a local worker's batch may use when no other worker of the gateway holds
    one (the idle cores); 0 or not above the instance's own: never more than its own."""


class Instance(Protocol):
    """What the rest of the server may rely on, whatever computes the batches."""

    id: str
    reference: str
    weight: float
    threads: int
    hung: int
    pid: int | None
    spec: ModelSpec | None
    batcher: Batcher

    @property
    def state(self) -> str: ...

    @property
    def load(self) -> protocol.Load: ...

    @property
    def latency_ewma(self) -> float: ...

    def view(self) -> InstanceView: ...

    def submit(
        self, request: InferenceRequest, parameters: dict[str, Any]
    ) -> asyncio.Future[Outputs]: ...

    async def start(self) -> None: ...

    async def stop(self, drain: bool = True, drain_seconds: float = 30.0) -> None: ...


class BatchedInstance:
    """The shared mechanism: the batch queue built from the options, the scheduler's view, and
    the first half of every ``stop`` (close the queue, let what is held finish).

    A subclass sets ``state`` and implements ``_send`` (the channel), ``start`` and ``stop``."""

    state: str
    spec: ModelSpec | None
    serial = False
    """Whether the instance computes one batch at a time (``Batcher.serial``)."""

    def __init__(
        self, options: InstanceOptions, default_id: str, on_failure: FailureHandler
    ) -> None:
        self.id = options.name or default_id
        self.weight = options.weight
        self.options = options
        self.hung = 0
        self.pid: int | None = None
        self.spec = None
        self.on_failure = on_failure
        self.batcher = Batcher(
            self._send,
            options.max_queue_items,
            options.batching(),
            options.depth,
            options.max_queue_wait,
            by_length=options.by_length,
            fair=options.fair,
            urgent_max_batch=options.urgent_max_batch,
            client_weights=options.client_weights,
            max_batch_tokens=options.max_batch_tokens,
            serial=self.serial,
        )

    def _send(
        self, inputs: dict[str, Any], parameters: dict[str, Any]
    ) -> asyncio.Future[protocol.Result | protocol.Failure]:
        raise NotImplementedError

    def _adopt(self, spec: ModelSpec) -> None:
        """Take the model's spec once it is loaded (under the name and version it is served as),
        before any request: the batcher learns its units and batch bound."""
        if self.options.served_as is not None:
            name, version = self.options.served_as
            spec = replace(spec, name=name, version=version)
        self.spec = spec
        self.batcher.adopt(spec)

    @property
    def latency_ewma(self) -> float:
        """Smoothed batch round trip, seconds (0 before the first batch)."""
        return self.batcher.latency_ewma

    def view(self) -> InstanceView:
        return InstanceView(
            self.id,
            self.weight,
            self.batcher.inflight,
            self.batcher.queued,
            self.latency_ewma,
            self.state == "ready",
        )

    def submit(
        self, request: InferenceRequest, parameters: dict[str, Any]
    ) -> asyncio.Future[Outputs]:
        return self.batcher.submit(request, parameters)

    async def _drain(self, drain: bool, drain_seconds: float) -> None:
        """Take no more requests; with ``drain``, wait (up to ``drain_seconds``) for the queued
        and in-flight ones to be answered."""
        self.batcher.open = False
        if drain:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(drain_seconds):
                    await self.batcher.wait_idle()
