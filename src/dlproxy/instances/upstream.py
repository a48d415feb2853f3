"""A remote KServe v2 server (another dlproxy, Triton) as one instance of a model.

To the pool and the policies it looks like a LocalInstance; its channel is HTTP. The same Batcher
queues and batches its requests, and each batch is one KServe v2 request with the binary tensor
extension, over one keep-alive session shared by every upstream. A task polls the model's ready
route; consecutive request failures eject the instance for a growing time (health.py). Nothing
ever replaces an upstream: the remote server comes back on its own, and then gets traffic again.
States: starting -> ready <-> unhealthy | ejected, -> draining -> stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import struct
from collections.abc import Callable
from typing import Any

import aiohttp
import numpy as np
import orjson

from dlproxy import protocol
from dlproxy.batching.batcher import Batcher, Outputs
from dlproxy.batching.policy import BatchingPolicy
from dlproxy.clock import MonotonicClock
from dlproxy.errors import InstanceFailed
from dlproxy.instances.base import BatchedInstance
from dlproxy.instances.health import OutlierDetector
from dlproxy.types import DTYPES, InferenceRequest, ModelSpec, TensorSpec, datatype_of

log = logging.getLogger("dlproxy.instances")
_numbers = itertools.count(1)
_U32 = struct.Struct("<I")

Hedge = Callable[[InferenceRequest, dict[str, Any], frozenset[str]], "asyncio.Future[Outputs]"]
"""Submit a request to another instance than those named (the pool's choice)."""

BAD_INPUT = frozenset({400, 413, 422})
"""The request is wrong: any other instance would refuse it too."""
BUSY = frozenset({429, 503})
"""The upstream is alive but refuses work now: try another instance, do not count it an outlier."""


class UpstreamClient:
    """The one HTTP session every upstream shares: keep-alive, a bounded pool per host.

    The first instance to start opens it and the last to stop closes it, so nobody has to."""

    def __init__(self, limit_per_host: int = 32, connect_timeout: float = 1.0) -> None:
        self.limit_per_host = limit_per_host
        self.connect_timeout = connect_timeout
        self._session: aiohttp.ClientSession | None = None
        self._users = 0

    def acquire(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, limit_per_host=self.limit_per_host),
                timeout=aiohttp.ClientTimeout(sock_connect=self.connect_timeout),
            )
        self._users += 1
        return self._session

    async def release(self) -> None:
        self._users -= 1
        if self._users == 0 and self._session is not None:
            session, self._session = self._session, None
            await session.close()


class UpstreamInstance(BatchedInstance):
    """One model on one remote KServe v2 server."""

    def __init__(
        self,
        client: UpstreamClient,
        url: str,
        model: str,
        *,
        max_queue_items: int,
        batching: BatchingPolicy,
        depth: int = 4,
        weight: float = 1.0,
        name: str | None = None,
        outlier: OutlierDetector | None = None,
        health_interval: float = 1.0,
        unhealthy_after: int = 2,
        probe_timeout: float = 1.0,
        request_timeout: float = 30.0,
        start_timeout: float = 300.0,
        max_queue_wait: float | None = None,
        hedge: Hedge | None = None,
        hedge_after: float | None = None,
    ) -> None:
        self.id = name or f"u{next(_numbers)}"
        self.reference = url.rstrip("/")
        self.model = model
        self.weight = weight
        self.pid: int | None = None
        self.threads = 0
        self.hung = 0
        self.spec: ModelSpec | None = None
        self.outlier = outlier or OutlierDetector(MonotonicClock())
        self.health_interval = health_interval
        self.unhealthy_after = unhealthy_after
        self.start_timeout = start_timeout
        self.hedge = hedge
        self.hedge_after = hedge_after
        self.hedges = 0
        self.on_failure: Callable[[Any, list[Any]], None] = lambda instance, orphans: None
        self._client = client
        self._session: aiohttp.ClientSession | None = None
        self._request_timeout = aiohttp.ClientTimeout(
            total=request_timeout, sock_connect=client.connect_timeout
        )
        self._probe_timeout = aiohttp.ClientTimeout(total=probe_timeout)
        self._phase = "starting"
        self._healthy = True
        self._posts: dict[asyncio.Future[Any], asyncio.Task[None]] = {}
        self._health: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        self.batcher = Batcher(self._send, max_queue_items, batching, depth, max_queue_wait)

    @property
    def state(self) -> str:
        """Derived, so that an ejection ends by itself when its time is up."""
        if self._phase != "running":
            return self._phase
        if not self._healthy:
            return "unhealthy"
        if self.outlier.ejected():
            return "ejected"
        return "ready"

    @state.setter
    def state(self, phase: str) -> None:
        """Setting a state sets the phase (``starting``, ``draining``, ...) it is derived from."""
        self._phase = phase

    @property
    def load(self) -> protocol.Load:
        """What the gateway can see of a remote server: its round-trip time per batch."""
        return protocol.Load(
            service_time=self.latency_ewma, batches=self.batcher.statistics().batches
        )

    def submit(
        self, request: InferenceRequest, parameters: dict[str, Any]
    ) -> asyncio.Future[Outputs]:
        primary = self.batcher.submit(request, parameters)
        if self.hedge is None or self.hedge_after is None:
            return primary
        return self._hedged(primary, request, parameters, self.hedge, self.hedge_after)

    # --- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Read the model's metadata and wait until the server says the model is ready."""
        self._phase = "starting"
        self._session = self._client.acquire()
        try:
            async with asyncio.timeout(self.start_timeout):
                while True:  # polling: a remote server has no event to wait on
                    metadata = await self._ready_metadata()
                    if metadata is not None:
                        break
                    await asyncio.sleep(min(0.2, self.health_interval))
        except BaseException as exc:  # timed out, or the server is shutting down
            self._session = None
            self._phase = "failed"
            await self._client.release()
            if isinstance(exc, TimeoutError):
                raise RuntimeError(
                    f"upstream {self.reference} did not get model '{self.model}' ready "
                    f"in {self.start_timeout:.0f} s"
                ) from None
            raise
        self.spec = spec_of(self.model, metadata)
        self.batcher.adopt(self.spec)  # it would refuse bigger batches
        self._healthy = True
        self._phase = "running"
        self._health = asyncio.create_task(self._check_health(), name=f"health {self.id}")
        log.info("upstream %s ready (%s, model %s)", self.id, self.reference, self.model)

    async def stop(self, drain: bool = True, drain_seconds: float = 30.0) -> None:
        """Stop taking requests, finish what is held (when ``drain``), then let go of the session."""
        self._phase = "draining"
        self.batcher.open = False
        if drain:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(drain_seconds):
                    await self.batcher.wait_idle()
        if self._health is not None:
            self._health.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health
        self._abort(f"upstream {self.id} was stopped")
        if self._session is not None:
            self._session = None
            await self._client.release()
        self._phase = "stopped"

    # --- health -----------------------------------------------------------------------------

    async def _check_health(self) -> None:
        """Poll the ready route; ``unhealthy_after`` failures in a row take the instance out."""
        failures = 0
        while True:
            await asyncio.sleep(self.health_interval)
            if await self._probe():
                failures = 0
                if not self._healthy:
                    self._healthy = True
                    self.outlier.success()  # back: it must fail a full streak again to be ejected
                    log.info("upstream %s (%s) is ready again", self.id, self.reference)
                continue
            failures += 1
            if self._healthy and failures >= self.unhealthy_after:
                self._healthy = False
                log.warning(
                    "upstream %s (%s) failed %d health checks: taking it out",
                    self.id,
                    self.reference,
                    failures,
                )
                # As for a hung worker: what it holds is retried elsewhere now, not at a timeout.
                self._fail_queued()
                self._abort(f"upstream {self.id} ({self.reference}) stopped answering")

    async def _ready_metadata(self) -> dict[str, Any] | None:
        """The model's metadata once the model is ready there; None before (or unreachable)."""
        assert self._session is not None
        try:
            async with self._session.get(
                f"{self.reference}/v2/models/{self.model}", timeout=self._probe_timeout
            ) as response:
                if response.status != 200:
                    return None
                metadata: dict[str, Any] = orjson.loads(await response.read())
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        return metadata if await self._probe() else None

    async def _probe(self) -> bool:
        assert self._session is not None
        try:
            async with self._session.get(
                f"{self.reference}/v2/models/{self.model}/ready", timeout=self._probe_timeout
            ) as response:
                await response.read()
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    def _failed(self, reason: str) -> InstanceFailed:
        """Count a failure of the upstream; it may eject the instance."""
        if self.outlier.failure():
            stats = self.outlier.statistics()
            log.warning(
                "upstream %s (%s) ejected for %.1f s after %d failures in a row: %s",
                self.id,
                self.reference,
                stats.ejected_for,
                stats.consecutive_failures,
                reason,
            )
            self._fail_queued()
        return InstanceFailed(f"upstream {self.id} ({self.reference}) failed: {reason}")

    def _fail_queued(self) -> None:
        """Requests still queued here go back to the gateway, which retries them elsewhere."""
        for pending in self.batcher.drain_queue():
            if not pending.future.done():
                pending.future.set_exception(
                    InstanceFailed(f"upstream {self.id} ({self.reference}) was taken out")
                )

    def _abort(self, reason: str) -> None:
        """Fail every batch in flight (their requests are retried) and end their HTTP calls."""
        posts, self._posts = self._posts, {}
        for future, task in posts.items():
            if not future.done():
                future.set_exception(InstanceFailed(reason))
            task.cancel()

    # --- the channel ------------------------------------------------------------------------

    def _send(
        self, inputs: dict[str, np.ndarray], parameters: dict[str, Any]
    ) -> asyncio.Future[protocol.Result | protocol.Failure]:
        """The Batcher's send: one KServe request per batch; the future always settles."""
        future: asyncio.Future[protocol.Result | protocol.Failure] = self._loop.create_future()
        task = asyncio.create_task(self._post(inputs, parameters, future), name=f"post {self.id}")
        self._posts[future] = task
        task.add_done_callback(lambda done: self._posts.pop(future, None))
        return future

    async def _post(
        self,
        inputs: dict[str, np.ndarray],
        parameters: dict[str, Any],
        future: asyncio.Future[protocol.Result | protocol.Failure],
    ) -> None:
        try:
            outcome: protocol.Result | protocol.Failure | BaseException = await self._infer(
                inputs, parameters
            )
        except InstanceFailed as exc:
            outcome = exc
        except Exception as exc:  # a bug here must still answer the batch
            log.exception("upstream %s: unexpected error", self.id)
            outcome = InstanceFailed(f"upstream {self.id}: {type(exc).__name__}: {exc}")
        if future.done():
            return
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    async def _infer(
        self, inputs: dict[str, np.ndarray], parameters: dict[str, Any]
    ) -> protocol.Result | protocol.Failure:
        if self._session is None:
            raise InstanceFailed(f"upstream {self.id} is not started")
        body, header_length = encode_request(inputs, parameters)
        try:
            async with self._session.post(
                f"{self.reference}/v2/models/{self.model}/infer",
                data=body,
                headers={
                    "Inference-Header-Content-Length": str(header_length),
                    "Content-Type": "application/octet-stream",
                },
                timeout=self._request_timeout,
            ) as response:
                payload = await response.read()
                status = response.status
                length = response.headers.get("Inference-Header-Content-Length")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._failed(f"{type(exc).__name__}: {exc}".rstrip(": ")) from None
        if status == 200:
            items = next(iter(inputs.values())).shape[0]
            try:
                outputs = decode_response(payload, length, items)
            except (ValueError, KeyError, TypeError) as exc:
                raise self._failed(f"its answer could not be decoded: {exc}") from None
            self.outlier.success()
            return protocol.Result(0, outputs, self.load)
        message = _error_message(payload, status)
        if status in BAD_INPUT or status == 500:
            # It answered: the server is fine; 500 is what a dlproxy upstream says for a model error.
            self.outlier.success()
            return protocol.Failure(0, message, status in BAD_INPUT, self.load)
        if status in BUSY:
            raise InstanceFailed(f"upstream {self.id} ({self.reference}) is busy: {message}")
        raise self._failed(f"HTTP {status}: {message}")

    # --- hedging ----------------------------------------------------------------------------

    def _hedged(
        self,
        primary: asyncio.Future[Outputs],
        request: InferenceRequest,
        parameters: dict[str, Any],
        hedge: Hedge,
        after: float,
    ) -> asyncio.Future[Outputs]:
        """The first answer of ``primary`` and, if it has none after ``after`` s, of the same
        request on a second instance; the loser is cancelled (a queued one is never sent)."""
        result: asyncio.Future[Outputs] = self._loop.create_future()
        racing: list[asyncio.Future[Outputs]] = [primary]

        def settle(done: asyncio.Future[Outputs]) -> None:
            if not done.cancelled():
                done.exception()  # seen, even when the other one already answered
            if result.done():
                return
            if not done.cancelled() and done.exception() is None:
                result.set_result(done.result())
            elif all(f.done() for f in racing):  # the last one out reports its error
                if done.cancelled():
                    result.cancel()
                else:
                    result.set_exception(done.exception())  # type: ignore[arg-type]

        def fire() -> None:
            if result.done():
                return
            try:
                second = hedge(request, parameters, frozenset({self.id}))
            except Exception:  # nowhere to hedge to (or it is full): keep waiting
                return
            self.hedges += 1
            racing.append(second)
            second.add_done_callback(settle)

        def finish(done: asyncio.Future[Outputs]) -> None:
            timer.cancel()
            for future in racing:
                if not future.done():
                    future.cancel()

        timer = self._loop.call_later(after, fire)
        primary.add_done_callback(settle)
        result.add_done_callback(finish)
        return result


# --- KServe v2 binary tensor extension, client side --------------------------------------------


def encode_request(inputs: dict[str, np.ndarray], parameters: dict[str, Any]) -> tuple[bytes, int]:
    """One infer request body: JSON header, then each input's raw bytes; all outputs binary."""
    specs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, array in inputs.items():
        if array.dtype == object:
            blob = b"".join(
                _U32.pack(len(data)) + data
                for data in (
                    item.encode() if isinstance(item, str) else bytes(item)
                    for item in array.ravel().tolist()
                )
            )
        else:
            blob = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
        specs.append(
            {
                "name": name,
                "datatype": datatype_of(array),
                "shape": list(array.shape),
                "parameters": {"binary_data_size": len(blob)},
            }
        )
        blobs.append(blob)
    header = orjson.dumps(
        {"inputs": specs, "parameters": {**parameters, "binary_data_output": True}}
    )
    return b"".join([header, *blobs]), len(header)


def decode_response(
    body: bytes, header_length: str | None, items: int
) -> dict[str, protocol.WireTensor]:
    """The outputs of an infer response (binary or JSON data) as wire tensors of ``items`` rows.

    Raises ValueError (or KeyError, TypeError) for an answer that does not add up."""
    end = int(header_length) if header_length else len(body)
    header = orjson.loads(body[:end])
    offset = end
    outputs: dict[str, protocol.WireTensor] = {}
    for output in header["outputs"]:
        name, datatype = output["name"], output["datatype"]
        shape = tuple(int(d) for d in output["shape"])
        if datatype not in DTYPES:
            raise ValueError(f"output '{name}' has unknown datatype '{datatype}'")
        if not shape or shape[0] != items:
            raise ValueError(f"output '{name}' has shape {list(shape)} for {items} items")
        count = int(np.prod(shape))
        size = (output.get("parameters") or {}).get("binary_data_size")
        data: bytes | list[bytes]
        if size is None:
            data = _from_json(datatype, output["data"])
        else:
            if offset + size > len(body):
                raise ValueError(f"output '{name}' binary data runs past the body")
            raw = body[offset : offset + size]
            offset += size
            data = _unframe(raw) if datatype == "BYTES" else raw
        if datatype == "BYTES":
            if len(data) != count:
                raise ValueError(f"output '{name}' has {len(data)} elements, shape says {count}")
        elif len(data) != count * DTYPES[datatype].itemsize:
            raise ValueError(f"output '{name}' has {len(data)} bytes for shape {list(shape)}")
        outputs[name] = protocol.WireTensor(datatype, shape, data)
    return outputs


def _from_json(datatype: str, values: Any) -> bytes | list[bytes]:
    if datatype == "BYTES":
        flat = np.array(values, dtype=object).ravel().tolist()
        return [v.encode() if isinstance(v, str) else bytes(v) for v in flat]
    return np.array(values, dtype=DTYPES[datatype]).tobytes()


def _unframe(raw: bytes) -> list[bytes]:
    """BYTES binary data: each element is a 4-byte little-endian length, then its bytes."""
    items: list[bytes] = []
    position = 0
    while position < len(raw):
        (length,) = _U32.unpack_from(raw, position)
        position += 4
        if position + length > len(raw):
            raise ValueError("a BYTES element runs past its binary data")
        items.append(raw[position : position + length])
        position += length
    return items


def _error_message(body: bytes, status: int) -> str:
    try:
        return str(orjson.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body[:200].decode("utf-8", "replace") or f"HTTP {status}"


def spec_of(model: str, metadata: dict[str, Any]) -> ModelSpec:
    """A ModelSpec from KServe v2 model metadata (``GET /v2/models/{m}``)."""

    def tensors(key: str) -> tuple[TensorSpec, ...]:
        return tuple(
            TensorSpec(t["name"], t["datatype"], tuple(int(d) for d in t["shape"]))
            for t in metadata.get(key) or []
        )

    versions = metadata.get("versions") or [""]
    return ModelSpec(
        name=model,
        version=str(versions[-1]),
        platform=str(metadata.get("platform", "")),
        inputs=tensors("inputs"),
        outputs=tensors("outputs"),
        max_batch_size=int(metadata.get("max_batch_size", 0)),
    )
