"""One instance's request queue and the rule that turns it into batches.

The rule: an idle instance gets whatever is queued at once (a lone request never waits). While
``depth`` batches are in flight nothing more is sent; below that, a partial batch is sent once it is
full or its oldest request has waited ``max_delay`` (behind an instance that computes one batch at
a time, ``serial``, also not before just ahead of its expected end of the work it holds: sent
earlier the batch would wait in the worker, closed to requests arriving). Waiting requests are woken by the completion of a
batch or by one timer, never by polling. The queue is bounded in items: a request that does not fit
is refused at once.

Batches, the queue bound and the admission estimate count *units*: one per item, or for a model
whose ``ModelSpec.unit_bytes`` is set, one per that many bytes of each text item (``units_of``). A
long text that the model cuts into many windows then takes the room of that many short ones.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dlproxy import protocol
from dlproxy.batching.policy import BatchingPolicy, FixedBatching
from dlproxy.errors import (
    BadRequest,
    DeadlineExceeded,
    DlproxyError,
    InstanceFailed,
    ModelError,
    Overloaded,
)
from dlproxy.histogram import LATENCY_BUCKETS, SIZE_BUCKETS, Histogram
from dlproxy.types import InferenceRequest, ModelSpec, datatype_name, mismatch

JUST_IN_TIME_LEAD = 0.002
"""Seconds before a serial instance is expected to be free that its next batch is sent: time
for the gateway's encode and the worker's decode (see ``Batcher.serial``)."""

Outputs = dict[str, np.ndarray]
SendBatch = Callable[
    [dict[str, np.ndarray], dict[str, Any]], "asyncio.Future[protocol.Result | protocol.Failure]"
]


def units_of(request: InferenceRequest, unit_bytes: int) -> int:
    """The batch units ``request`` takes: its items, each text counted by its size in
    ``unit_bytes`` (rounded up, at least 1) when ``unit_bytes`` is set."""
    items = request.items
    if unit_bytes <= 0:
        return items
    for array in request.inputs.values():
        if array.dtype == object:
            return sum(max(1, -(-len(item) // unit_bytes)) for item in array.ravel())
    return items


def signature(request: InferenceRequest) -> tuple[tuple[str, str, tuple[int, ...]], ...]:
    """What requests must share to be concatenated into one batch (as Triton requires): input
    names, dtypes and every dimension but the first."""
    return tuple(
        (name, array.dtype.str, tuple(array.shape[1:]))
        for name, array in sorted(request.inputs.items())
    )


@dataclass(slots=True)
class Pending:
    request: InferenceRequest
    parameters: dict[str, Any]
    future: asyncio.Future[Outputs]
    enqueued: float
    units: int = 1
    signature: tuple[tuple[str, str, tuple[int, ...]], ...] = ()
    priority: int = 0


@dataclass(slots=True)
class BatcherStatistics:
    queued_requests: int
    queued_items: int
    """Queued batch units (items; long texts count by size, see ``units_of``)."""
    inflight_requests: int
    inflight_batches: int
    batches: int
    items: int
    queue_wait: Histogram
    """Seconds each request waited in the queue before its batch was sent."""
    inference: Histogram
    """Seconds from sending a batch to its reply (worker compute plus transport)."""
    batch_size: Histogram
    """Items per batch."""


@dataclass
class Batcher:
    send: SendBatch
    max_queue_items: int
    policy: BatchingPolicy = field(default_factory=FixedBatching)
    depth: int = 2
    max_queue_wait: float | None = None
    """Admission control: refuse a request whose estimated wait in the queue is longer (s)."""
    unit_bytes: int = 0
    """Set from the model's spec once it is loaded: see ``units_of``."""
    aging: float = 1.0
    """Seconds of waiting that raise a request's priority by one level, so none starves."""
    spec: ModelSpec | None = None
    """The model's, once it is loaded: every reply is checked against its declared outputs."""
    serial: bool = False
    """The instance computes one batch at a time (a local worker): a partial batch behind a busy
    instance then waits until just before the instance is expected to be free, not only
    ``max_delay``, since sent earlier it would only wait in the worker, while requests arriving
    meanwhile could have joined it."""

    def __post_init__(self) -> None:
        if self.max_queue_items < 1:
            raise ValueError(f"max_queue_items must be >= 1, got {self.max_queue_items}")
        self._loop = asyncio.get_running_loop()
        self._queue: deque[Pending] = deque()
        self._queued_units = 0
        self._prioritized = 0  # queued requests with a priority above the default (0)
        self._inflight_batches = 0
        self._inflight_requests = 0
        self._inflight_units = 0
        self._timer: asyncio.TimerHandle | None = None
        self._batches = 0
        self._items = 0
        self._queue_wait = Histogram(LATENCY_BUCKETS)
        self._inference = Histogram(LATENCY_BUCKETS)
        self._batch_size = Histogram(SIZE_BUCKETS)
        self.latency_ewma = 0.0
        """Seconds from sending a batch to its reply, smoothed: what least-response-time weighs."""
        self._seconds_per_unit = 0.0  # EWMA of batch latency / units: the queue-wait estimate
        self._compute_per_unit = 0.0  # EWMA of the worker's compute time / units
        self._held: deque[tuple[float, int]] = deque()  # (sent, units) of each batch in flight
        self._last_reply = 0.0
        self._idle = asyncio.Event()
        self._idle.set()
        self.open = True

    def submit(
        self, request: InferenceRequest, parameters: dict[str, Any]
    ) -> asyncio.Future[Outputs]:
        """Queue a request; the future resolves with its outputs. Raises Overloaded when full."""
        if not self.open:
            raise InstanceFailed("the instance is stopping")
        units = units_of(request, self.unit_bytes)
        if self._queued_units + units > self.max_queue_items and self._queue:
            raise Overloaded(f"the instance queue is full ({self._queued_units} items waiting)")
        if self.max_queue_wait is not None and self._queue:
            wait = (self._queued_units + units) * self._seconds_per_unit
            if wait > self.max_queue_wait:
                raise Overloaded(
                    f"the instance is overloaded (estimated queue wait {wait * 1000:.0f} ms)",
                    retry_after=wait,
                )
        future: asyncio.Future[Outputs] = self._loop.create_future()
        self._queue.append(
            Pending(
                request,
                parameters,
                future,
                self._loop.time(),
                units,
                signature(request),
                request.priority,
            )
        )
        self._queued_units += units
        if request.priority:
            self._prioritized += 1
        self._pump()
        return future

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def inflight(self) -> int:
        return self._inflight_requests

    @property
    def inflight_units(self) -> int:
        """Units in the batches the instance holds."""
        return self._inflight_units

    def adopt(self, spec: ModelSpec) -> None:
        """The model is known: count its texts in its units and never exceed its batch bound."""
        self.unit_bytes = spec.unit_bytes
        self.spec = spec
        if spec.max_batch_size > 0:
            self.policy.cap(spec.max_batch_size)

    def hold_limit(self, hang_timeout: float) -> float:
        """Seconds the oldest batch may be held before its instance counts as hung: the timeout,
        plus four times what the work held is measured to take (one request of many long texts
        cannot be split, but its size is bounded per request, so the limit stays meaningful)."""
        return hang_timeout + 4 * self._inflight_units * self._seconds_per_unit

    def statistics(self) -> BatcherStatistics:
        return BatcherStatistics(
            len(self._queue),
            self._queued_units,
            self._inflight_requests,
            self._inflight_batches,
            self._batches,
            self._items,
            self._queue_wait,
            self._inference,
            self._batch_size,
        )

    async def wait_idle(self) -> None:
        """Return once nothing is queued or in flight."""
        await self._idle.wait()

    def drain_queue(self) -> list[Pending]:
        """Take every queued (not yet sent) request out, for another instance to serve."""
        taken = list(self._queue)
        self._queue.clear()
        self._queued_units = 0
        self._prioritized = 0
        return taken

    def _pump(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        # A prioritized request may go as one batch more than ``depth``: it then waits behind
        # the batch being computed only, not behind every one the worker holds.
        while self._queue and self._inflight_batches < self.depth + (self._prioritized > 0):
            if self._inflight_batches > 0 and self._queued_units < self.policy.max_batch:
                wake = self._queue[0].enqueued + self.policy.max_delay
                if self.serial:
                    wake = max(wake, self._free_at() - JUST_IN_TIME_LEAD)
                if self._loop.time() < wake:
                    self._timer = self._loop.call_at(wake, self._pump)
                    break
            self._send_one()
        if self._queue or self._inflight_batches:
            self._idle.clear()
        else:
            self._idle.set()

    def _free_at(self) -> float:
        """When a serial instance should finish what it holds: the batch computing began at the
        later of its sending and the last reply, and each batch takes its units' measured cost
        (0 until one was measured: then only ``max_delay`` applies)."""
        sent, _ = self._held[0]
        units = sum(u for _, u in self._held)
        return max(sent, self._last_reply) + units * self._compute_per_unit

    def _take(self) -> list[Pending]:
        """The next batch: the oldest request and, in order, the queued ones it can share a batch
        with (same parameters, same input names, dtypes and non-batch shapes), up to max_batch
        units; the others keep their places. A request marked ``alone`` is a batch by itself.
        With priorities queued, the queue is first ordered by priority, aged by the wait.
        Deadlines are checked on the way."""
        now = self._loop.time()
        if self._prioritized:  # highest priority first, a level more per ``aging`` s waited
            self._queue = deque(
                sorted(
                    self._queue,
                    key=lambda p: p.priority + (now - p.enqueued) / self.aging,
                    reverse=True,
                )
            )
        taken: list[Pending] = []
        kept: deque[Pending] = deque()
        size = 0
        while self._queue:
            head = self._queue.popleft()
            if taken and (
                size + head.units > self.policy.max_batch
                or head.signature != taken[0].signature
                or head.parameters != taken[0].parameters
                or head.request.alone
                or head.priority < taken[0].priority  # a priority batch stays small and fast
            ):
                kept.append(head)
                if (
                    size + head.units > self.policy.max_batch
                    and head.signature == taken[0].signature
                ):
                    break  # full: what follows waits for the next batch
                continue
            self._queued_units -= head.units
            if head.priority:
                self._prioritized -= 1
            if head.future.done():  # the client gave up
                continue
            if head.request.deadline is not None and head.request.deadline <= now:
                head.future.set_exception(
                    DeadlineExceeded("the request's deadline passed while it was queued")
                )
                continue
            taken.append(head)
            size += head.units
            if head.request.alone:  # a suspect since its last batch failed: batched with nobody
                break
        kept.extend(self._queue)
        self._queue = kept
        return taken

    def _send_one(self) -> None:
        batch = self._take()
        if not batch:
            return
        started = self._loop.time()
        try:
            if len(batch) == 1:
                inputs = batch[0].request.inputs
            else:
                names = batch[0].request.inputs.keys()
                inputs = {
                    name: np.concatenate([p.request.inputs[name] for p in batch]) for name in names
                }
            reply = self.send(inputs, batch[0].parameters)
        except Exception as exc:  # nothing reached the worker: every request taken is answered
            error = (
                exc
                if isinstance(exc, DlproxyError)
                else ModelError(f"the batch could not be sent to the model: {exc}")
            )
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(error)
            return
        for pending in batch:
            self._queue_wait.observe(started - pending.enqueued)
        self._inflight_batches += 1
        self._inflight_requests += len(batch)
        units = sum(p.units for p in batch)
        self._inflight_units += units
        held = (started, units)
        self._held.append(held)
        reply.add_done_callback(lambda done: self._complete(batch, done, held))

    def _complete(
        self,
        batch: list[Pending],
        reply: asyncio.Future[protocol.Result | protocol.Failure],
        held: tuple[float, int],
    ) -> None:
        started, units = held
        self._held.remove(held)
        self._last_reply = self._loop.time()
        self._inflight_batches -= 1
        self._inflight_requests -= len(batch)
        self._inflight_units -= units
        try:
            message = reply.result()
        except Exception as exc:
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            self._pump()
            return
        items = sum(p.request.items for p in batch)
        latency = self._loop.time() - started
        self._batches += 1
        self._items += items
        self._inference.observe(latency)
        self._batch_size.observe(items)
        per_unit = latency / units
        self._seconds_per_unit = (
            per_unit if self._batches == 1 else 0.9 * self._seconds_per_unit + 0.1 * per_unit
        )
        compute = (message.load.service_time or latency) / units  # the worker's own figure
        self._compute_per_unit = (
            compute if self._batches == 1 else 0.9 * self._compute_per_unit + 0.1 * compute
        )
        self.policy.observe(latency, units)
        self.latency_ewma = (
            latency if self.latency_ewma == 0.0 else 0.8 * self.latency_ewma + 0.2 * latency
        )
        if isinstance(message, protocol.Failure):
            error: Exception = (
                BadRequest(message.message) if message.bad_input else ModelError(message.message)
            )
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(error)
        else:
            try:
                outputs = _rows(message, items, self.spec)
            except Exception as exc:  # a reply that does not fit the batch answers nobody right
                model = f"model '{self.spec.name}'" if self.spec is not None else "the model"
                error = ModelError(f"{model} sent a reply that does not fit its batch: {exc}")
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(error)
                self._pump()
                return
            start = 0
            for pending in batch:
                n = pending.request.items
                if not pending.future.done():
                    pending.future.set_result(
                        {name: array[start : start + n] for name, array in outputs.items()}
                    )
                start += n
        self._pump()


def _rows(message: protocol.Result, items: int, spec: ModelSpec | None) -> Outputs:
    """The reply's outputs, each with one row per item of the batch and, where the model
    declares the output, of its datatype and shape (else ValueError)."""
    outputs = {name: protocol.from_wire(t) for name, t in message.outputs.items()}
    for name, array in outputs.items():
        rows = array.shape[0] if array.ndim else 0
        if rows != items:
            raise ValueError(
                f"output '{name}' has {rows} row(s) (shape {list(array.shape)}) for a batch of "
                f"{items} item(s)"
            )
        tensor = spec.output(name) if spec is not None else None
        if tensor is None:
            continue
        datatype = datatype_name(array)
        part = mismatch(datatype, array.shape, tensor)
        if part == "datatype":
            raise ValueError(f"output '{name}' is {datatype}, declared {tensor.datatype}")
        if part == "shape":
            raise ValueError(
                f"output '{name}' has shape {list(array.shape)}, declared {list(tensor.shape)}"
            )
    return outputs
