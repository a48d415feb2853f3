"""The HTTP load generator behind ``dlproxy bench``: closed or open loop, KServe v2 or OpenAI.

- Closed loop (``concurrency``): N workers, each sending its next request as soon as the previous
  one is answered. Measures the throughput a fixed number of clients can get.
- Open loop (``rate``): Poisson arrivals (exponential gaps) scheduled against the clock, so a slow
  server does not slow the schedule down. Latency is timed from the scheduled arrival, so the
  client's own lateness is charged to the result instead of hidden (no coordinated omission).
  At most ``max_outstanding`` requests are in flight; arrivals beyond that are client-side drops.

Requests started during the warm-up are sent but not counted; requests started in the measured
window are counted even if they finish after it. The client shares the machine with the server, so
the per-request work is kept small: bodies are encoded before the timed run, responses are read
and thrown away, and only a few numbers are recorded per request.
"""

from __future__ import annotations

import asyncio
import collections
import math
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter

import aiohttp
import numpy as np
import orjson

from dlproxy.bench.inputs import InputSource

PROTOCOLS: tuple[str, ...] = ("kserve", "openai")
CACHE_HEADER = "X-Dlproxy-Cache"
INSTANCE_HEADER = "X-Dlproxy-Instance"
_HEADERS = {"Content-Type": "application/json"}
_BLOCK = 20_000  # bodies encoded at a time in closed loop (tens of ms per block)
_TICK_S = 0.25  # progress callback period
_EARLY_S = 0.001  # an arrival due within this is sent now: timers are only millisecond-precise


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """What to send, where and how hard; ``rate`` set means open loop, else ``concurrency``."""

    url: str
    model: str
    protocol: str = "kserve"
    concurrency: int = 32
    rate: float | None = None
    duration: float = 10.0
    warmup: float = 2.0
    items: int = 1
    input_name: str = "text"
    item_shape: tuple[int, ...] = ()
    """Each item's dimensions after the batch axis: ``(1,)`` for servers that take a batched
    BYTES input as [N, 1] (Triton's models with ``max_batch_size``)."""
    timeout: float = 30.0
    max_outstanding: int = 10_000
    seed: int = 0
    headers: tuple[tuple[str, str], ...] = ()
    """Sent with every request besides the content type (``X-Priority: 9``, an API key)."""

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if self.rate is not None and not self.rate > 0:
            raise ValueError(f"rate must be > 0, got {self.rate}")
        positive = {
            "concurrency": self.concurrency,
            "duration": self.duration,
            "items": self.items,
            "timeout": self.timeout,
            "max_outstanding": self.max_outstanding,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")

    @property
    def mode(self) -> str:
        """``open`` (Poisson arrivals at ``rate``) or ``closed`` (``concurrency`` workers)."""
        return "closed" if self.rate is None else "open"

    @property
    def target(self) -> str:
        """The URL every request is POSTed to."""
        base = self.url.rstrip("/")
        if self.protocol == "openai":
            return f"{base}/v1/embeddings"
        return f"{base}/v2/models/{self.model}/infer"


@dataclass(frozen=True, slots=True)
class Progress:
    """A live view for progress bars; counts include the warm-up."""

    elapsed: float
    total: float
    completed: int
    errors: int
    rate: float  # completed requests per second over the last second or so
    warming_up: bool


@dataclass(frozen=True, slots=True)
class Recording:
    """Everything measured in the window; ``report.Report`` turns it into figures."""

    spec: LoadSpec
    inputs: str
    start_s: np.ndarray  # float64: when each counted request started, from the window start
    latency_s: np.ndarray  # float64
    status: np.ndarray  # int32: HTTP status, 0 for a connection error or timeout
    errors: dict[str, int]  # "503", "0:ClientConnectorError", ...
    cache: dict[str, int]  # X-Dlproxy-Cache value -> count
    instances: dict[str, int]  # X-Dlproxy-Instance value -> count
    dropped: int  # open loop: arrivals refused because max_outstanding were in flight
    offered: int  # open loop: arrivals scheduled in the window (closed loop: 0)


def encode_body(
    protocol: str,
    model: str,
    input_name: str,
    sentences: list[str],
    item_shape: tuple[int, ...] = (),
) -> bytes:
    """One request body: a KServe v2 BYTES tensor (of shape [N, *item_shape]) or an OpenAI
    embeddings request."""
    if protocol == "openai":
        text: str | list[str] = sentences[0] if len(sentences) == 1 else sentences
        return orjson.dumps({"model": model, "input": text})
    shape = [len(sentences), *item_shape]
    tensor = {"name": input_name, "shape": shape, "datatype": "BYTES", "data": sentences}
    return orjson.dumps({"inputs": [tensor]})


class _Bodies:
    """Request bodies encoded ahead of time, handed out in order, refilled a block at a time."""

    def __init__(self, source: InputSource, spec: LoadSpec, first: int) -> None:
        self._source = source
        self._spec = spec
        self._bodies: list[bytes] = []
        self._next = 0
        self._fill(first)

    def _fill(self, count: int) -> None:
        spec, items = self._spec, self._spec.items
        sentences = self._source.take(count * items)
        self._bodies = [
            encode_body(
                spec.protocol,
                spec.model,
                spec.input_name,
                sentences[i : i + items],
                spec.item_shape,
            )
            for i in range(0, len(sentences), items)
        ]
        self._next = 0

    def next(self) -> bytes:
        if self._next == len(self._bodies):
            self._fill(_BLOCK)
        body = self._bodies[self._next]
        self._next += 1
        return body


class _Run:
    """One load test: the session, the clock window and the per-request records."""

    def __init__(self, spec: LoadSpec, source: InputSource) -> None:
        self.spec = spec
        self.inputs = source.description
        self.url = spec.target
        self.headers = {**_HEADERS, **dict(spec.headers)}  # built once: sent with every request
        self.arrivals: list[float] = []  # open loop: offsets from the start, built before timing
        if spec.rate is not None:
            self.arrivals = _poisson_offsets(spec.rate, spec.warmup + spec.duration, spec.seed)
            first = len(self.arrivals) + 1
        else:
            first = _BLOCK
        self.bodies = _Bodies(source, spec, first)
        self.session: aiohttp.ClientSession | None = None
        self.began = self.window_start = self.window_end = 0.0
        self.completed = self.failed = self.dropped = self.offered = 0
        self.starts: list[float] = []
        self.latencies: list[float] = []
        self.statuses: list[int] = []
        self.errors: dict[str, int] = {}
        self.cache: dict[str, int] = {}
        self.instances: dict[str, int] = {}
        self.history: collections.deque[tuple[float, int]] = collections.deque(maxlen=5)

    async def run(self, on_progress: Callable[[Progress], None] | None) -> Recording:
        spec = self.spec
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
        async with aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=spec.timeout),
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
        ) as session:
            self.session = session
            self.began = perf_counter()
            self.window_start = self.began + spec.warmup
            self.window_end = self.window_start + spec.duration
            ticker = asyncio.create_task(self._tick(on_progress)) if on_progress else None
            try:
                if spec.rate is None:
                    await self._closed_loop()
                else:
                    await self._open_loop()
            finally:
                if ticker is not None:
                    ticker.cancel()
                    await asyncio.gather(ticker, return_exceptions=True)
        if on_progress is not None:
            on_progress(self._progress())
        return Recording(
            spec=spec,
            inputs=self.inputs,
            start_s=np.asarray(self.starts, dtype=np.float64) - self.window_start,
            latency_s=np.asarray(self.latencies, dtype=np.float64),
            status=np.asarray(self.statuses, dtype=np.int32),
            errors=self.errors,
            cache=self.cache,
            instances=self.instances,
            dropped=self.dropped,
            offered=self.offered,
        )

    async def _send(self, body: bytes, started: float, counted: bool) -> None:
        """One request, timed from ``started``; failures are recorded, never raised."""
        assert self.session is not None
        status, error, cache, instance = 0, "", None, None
        try:
            async with self.session.post(self.url, data=body, headers=self.headers) as response:
                await response.read()
                status = response.status
                cache = response.headers.get(CACHE_HEADER)
                instance = response.headers.get(INSTANCE_HEADER)
        except Exception as exc:  # connection refused/reset, timeout: status 0, by class
            error = f"0:{type(exc).__name__}"
        latency = perf_counter() - started
        self.completed += 1
        ok = 200 <= status < 300
        if not ok:
            self.failed += 1
        if not counted:
            return  # warm-up
        self.starts.append(started)
        self.latencies.append(latency)
        self.statuses.append(status)
        if not ok:
            key = error or str(status)
            self.errors[key] = self.errors.get(key, 0) + 1
        if cache is not None:
            self.cache[cache] = self.cache.get(cache, 0) + 1
        if instance is not None:
            self.instances[instance] = self.instances.get(instance, 0) + 1

    async def _closed_loop(self) -> None:
        async def worker() -> None:
            start, end, bodies = self.window_start, self.window_end, self.bodies
            while True:
                body = bodies.next()  # before the clock starts: a refill is not latency
                started = perf_counter()
                if started >= end:
                    return
                await self._send(body, started, started >= start)

        async with asyncio.TaskGroup() as group:
            for _ in range(self.spec.concurrency):
                group.create_task(worker())

    async def _open_loop(self) -> None:
        cap, began = self.spec.max_outstanding, self.began
        window_start, window_end = self.window_start, self.window_end
        in_flight: set[asyncio.Task[None]] = set()
        behind = 0
        async with asyncio.TaskGroup() as group:
            for offset in self.arrivals:
                due = began + offset
                delay = due - perf_counter()
                if delay > _EARLY_S:
                    await asyncio.sleep(delay)
                    behind = 0
                else:
                    behind += 1
                    if behind % 64 == 0:  # late and catching up: let responses in meanwhile
                        await asyncio.sleep(0)
                counted = window_start <= due < window_end
                self.offered += int(counted)
                if len(in_flight) >= cap:
                    self.dropped += int(counted)
                    continue
                # A late send is timed from when it was due (its wait is the user's wait).
                started = min(due, perf_counter())
                task = group.create_task(self._send(self.bodies.next(), started, counted))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)

    async def _tick(self, on_progress: Callable[[Progress], None]) -> None:
        while True:
            on_progress(self._progress())
            await asyncio.sleep(_TICK_S)

    def _progress(self) -> Progress:
        now, history = perf_counter(), self.history
        history.append((now, self.completed))
        then, before = history[0]
        rate = (self.completed - before) / (now - then) if now > then else 0.0
        total = self.spec.warmup + self.spec.duration
        return Progress(
            elapsed=min(now - self.began, total),
            total=total,
            completed=self.completed,
            errors=self.failed,
            rate=rate,
            warming_up=now < self.window_start,
        )


def _poisson_offsets(rate: float, seconds: float, seed: int) -> list[float]:
    """Arrival times in ``[0, seconds)`` of a Poisson process, drawn before the run."""
    rng = np.random.default_rng(seed + 2)
    mean = rate * seconds
    size = int(mean + 6 * math.sqrt(mean) + 16)
    offsets = np.cumsum(rng.exponential(1.0 / rate, size=size))
    while offsets[-1] < seconds:  # astronomically rare, but never cut the schedule short
        more = np.cumsum(rng.exponential(1.0 / rate, size=size)) + offsets[-1]
        offsets = np.concatenate([offsets, more])
    kept: list[float] = offsets[offsets < seconds].tolist()
    return kept


async def run_load(
    spec: LoadSpec, source: InputSource, on_progress: Callable[[Progress], None] | None = None
) -> Recording:
    """Run one load test against ``spec.url``; ``on_progress`` is called a few times a second."""
    return await _Run(spec, source).run(on_progress)


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's loop when installed (less client CPU per request), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop
