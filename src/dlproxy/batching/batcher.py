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
import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import numpy as np

from dlproxy import protocol
from dlproxy.batching.fairness import FairShares
from dlproxy.batching.policy import BatchingPolicy, FixedBatching
from dlproxy.errors import (
    BadRequest,
    DeadlineExceeded,
    DlproxyError,
    InstanceFailed,
    ModelError,
    Overloaded,
    RateLimited,
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


LENGTH_WINDOW = 8
"""How many batches' worth of the queue's head a batch formed by length picks from: near lengths
from a long queue without a scan of all of it per batch."""

BYTES_PER_TOKEN = 4
"""About how many bytes of English text a word-piece token takes: the gateway's estimate of a
text's tokens before the model tokenizes it (padding and ``max_batch_tokens``)."""


def tokens_of(request: InferenceRequest, unit_bytes: int) -> int:
    """The estimated tokens of the request's longest text (of its longest window, for a model
    that counts a text by ``unit_bytes``): what a batch holding it is padded to. 0 without text."""
    for array in request.inputs.values():
        if array.dtype == object:
            longest = max(map(len, array.ravel()), default=0)
            if unit_bytes > 0:
                longest = min(longest, unit_bytes)
            return -(-longest // BYTES_PER_TOKEN) + 2  # the model's [CLS] and [SEP]
    return 0


def signature(request: InferenceRequest) -> tuple[tuple[str, str, tuple[int, ...]], ...]:
    """What requests must share to be concatenated into one batch (as Triton requires): input
    names, dtypes and every dimension but the first."""
    return tuple(
        (name, array.dtype.str, tuple(array.shape[1:]))
        for name, array in sorted(request.inputs.items())
    )


@dataclass(slots=True, eq=False)  # equal only to itself: the queue removes by identity
class Pending:
    request: InferenceRequest
    parameters: dict[str, Any]
    future: asyncio.Future[Outputs]
    enqueued: float
    units: int = 1
    signature: tuple[tuple[str, str, tuple[int, ...]], ...] = ()
    priority: int = 0
    tokens: int = 0
    """Estimated tokens of its longest text (``tokens_of``); 0: no text."""
    client: str = ""
    tag: float = 0.0
    """Its virtual finish tag (``FairShares.tag``): the order among clients' requests."""


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
    tokens: int = 0
    """Tokens the model ran, padding excluded (text models that report them)."""
    padded_tokens: int = 0
    """Tokens the model ran, padding included."""


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
    urgent_max_batch: int = 0
    """While urgent requests arrive (one in the last ``aging`` s: a prioritized one, or with
    ``fair`` one of a client with nothing queued while another holds more than this), a batch
    of the default priority holds at most this many units: a batch computing cannot be
    preempted, so an urgent request then waits behind a short one, not a full one. 0: no cap."""
    spec: ModelSpec | None = None
    """The model's, once it is loaded: every reply is checked against its declared outputs."""
    by_length: bool = True
    """Fill a batch with the texts nearest in length to its oldest request's first (by classes
    of twice the length), so that short texts are not padded to a long one's length; requests
    without text keep their order."""
    max_batch_tokens: int = 0
    """Most (estimated) padded tokens in one batch: items x the longest one's tokens; 0: no
    bound. A request over it alone still goes, by itself."""
    fair: bool = True
    """Serve the queue in fair-share order between clients (``fairness``), not arrival order."""
    client_weights: Mapping[str, float] = field(default_factory=dict)
    """``FairShares.weights``."""
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
        self._urgent_seen = -math.inf  # when an urgent request last arrived
        self.shares = FairShares(self.client_weights)
        self._inflight_batches = 0
        self._inflight_requests = 0
        self._inflight_units = 0
        self._timer: asyncio.TimerHandle | None = None
        self._batches = 0
        self._items = 0
        self._queue_wait = Histogram(LATENCY_BUCKETS)
        self._inference = Histogram(LATENCY_BUCKETS)
        self._batch_size = Histogram(SIZE_BUCKETS)
        self._tokens = 0
        self._padded_tokens = 0
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
        client = request.client
        refusal = self.refusal(client, units)
        if refusal is not None:
            raise refusal
        if self._queued_units + units > self.max_queue_items and self._queue:
            self._make_room(client, units)
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
                tokens_of(request, self.unit_bytes)
                if self.by_length or self.max_batch_tokens
                else 0,
                client,
                self.shares.tag(client, units),
            )
        )
        self._queued_units += units
        if request.priority or (
            self.fair
            and self.urgent_max_batch
            and self.shares.light(client, units, self.urgent_max_batch)
        ):
            self._urgent_seen = self._loop.time()
        if request.priority:
            self._prioritized += 1
        self._pump()
        return future

    def refusal(self, client: str, units: int = 1) -> Overloaded | None:
        """Why ``submit`` would refuse ``units`` from ``client`` now, or None; changes nothing,
        so the gateway can ask before it reads and decodes a body."""
        if not self._queue:
            return None
        if self._queued_units + units > self.max_queue_items and (
            not self.fair
            or self.shares.most_over_share(client, units, self.max_queue_items) is None
        ):
            return Overloaded(f"the instance queue is full ({self._queued_units} items waiting)")
        if self.max_queue_wait is not None:
            ahead = self.shares.ahead(client, units) if self.fair else self._queued_units + units
            wait = ahead * self._seconds_per_unit
            if wait > self.max_queue_wait:
                return Overloaded(
                    f"the instance is overloaded (estimated queue wait {wait * 1000:.0f} ms)",
                    retry_after=wait,
                )
        return None

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
            self._tokens,
            self._padded_tokens,
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
        self.shares.clear()
        return taken

    def _make_room(self, client: str, units: int) -> None:
        """The queue is full, and the arrival's client within its fair share (``refusal``):
        the newest requests of the client most over its own give up their places."""
        victim = self.shares.most_over_share(client, units, self.max_queue_items)
        assert victim is not None, "refusal() lets a full queue take only such an arrival"
        share = self.shares.share(victim, self.max_queue_items, arriving=client)
        while self._queued_units + units > self.max_queue_items:
            theirs = [p for p in self._queue if p.client == victim]
            if not theirs:
                break
            newest = max(theirs, key=lambda p: p.tag)
            self._queue.remove(newest)
            self._queued_units -= newest.units
            if newest.priority:
                self._prioritized -= 1
            self.shares.left(victim, newest.units, newest.tag, served=False)
            if not newest.future.done():
                newest.future.set_exception(
                    RateLimited(
                        "the instance queue is full and this client holds more than its fair "
                        f"share of it (over {share:.0f} of {self.max_queue_items} items): a "
                        "client sending less took its place"
                    )
                )

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
        """The next batch: the first request (the oldest; with several clients queued, the
        lowest virtual tag of ``fairness``; with priorities queued, the highest level, aged by
        the wait) and the queued ones it can share a batch with (same parameters, same input
        names, dtypes and non-batch shapes; with ``by_length``, texts of the nearest lengths
        first, else in order), up to max_batch units (``urgent_max_batch`` while urgent
        requests arrive) and ``max_batch_tokens``; the others keep their places. A request
        marked ``alone`` is a batch by itself. Deadlines are checked on the way."""
        now = self._loop.time()
        if self._prioritized:  # highest priority first, a level more per ``aging`` s waited
            fair = self.fair and self.shares.contended
            self._queue = deque(
                sorted(
                    self._queue,
                    key=lambda p: (
                        -(p.priority + int((now - p.enqueued) / self.aging)),
                        p.tag if fair else p.enqueued,
                    ),
                )
            )
        elif self.fair and self.shares.contended:  # each client's share, by virtual time
            self._queue = deque(sorted(self._queue, key=lambda p: p.tag))
        head = None
        while self._queue and head is None:
            head = self._live(self._queue.popleft(), now)
        if head is None:
            return []
        taken = [head]
        if head.request.alone:  # a suspect since its last batch failed: batched with nobody
            return taken
        size, longest = head.units, head.tokens
        limit = self.policy.max_batch
        if self.urgent_max_batch and not head.priority and now - self._urgent_seen < self.aging:
            limit = min(limit, self.urgent_max_batch)
        window = limit * (LENGTH_WINDOW if self.by_length and head.tokens else 1)
        compatible = (
            (index, p)
            for index, p in enumerate(self._queue)
            if p.signature == head.signature
            and p.parameters == head.parameters
            and not p.request.alone
            and p.priority >= head.priority  # a priority batch stays small and fast
        )
        candidates = list(islice(compatible, window))
        if self.by_length and head.tokens:
            level = head.tokens.bit_length()
            candidates.sort(key=lambda c: abs(c[1].tokens.bit_length() - level))
        chosen: set[int] = set()
        for index, pending in candidates:
            if size + pending.units > limit:
                break  # full: what follows waits for the next batch
            padded = max(longest, pending.tokens)
            if self.max_batch_tokens and (size + pending.units) * padded > self.max_batch_tokens:
                continue
            chosen.add(index)
            if self._live(pending, now) is not None:
                taken.append(pending)
                size += pending.units
                longest = padded
        if chosen:
            self._queue = deque(p for i, p in enumerate(self._queue) if i not in chosen)
        return taken

    def _live(self, pending: Pending, now: float) -> Pending | None:
        """A request taken off the queue, or None if its client gave up or its deadline passed
        (then it is answered here)."""
        self._queued_units -= pending.units
        if pending.priority:
            self._prioritized -= 1
        self.shares.left(pending.client, pending.units, pending.tag)
        if pending.future.done():  # the client gave up
            return None
        if pending.request.deadline is not None and pending.request.deadline <= now:
            pending.future.set_exception(
                DeadlineExceeded("the request's deadline passed while it was queued")
            )
            return None
        return pending

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
            self._tokens += message.tokens
            self._padded_tokens += message.padded
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
