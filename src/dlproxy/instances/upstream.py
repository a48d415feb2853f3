"""A remote KServe v2 server (another dlproxy, Triton) as one instance of a model.

To the pool and the policies it looks like a LocalInstance; its channel is HTTP. The same Batcher
queues and batches its requests, and each batch is one KServe v2 request with the binary tensor
extension, over one keep-alive session shared by every upstream. A task polls the model's ready
route; consecutive request failures eject the instance for a growing time (health.py). Nothing
ever replaces an upstream: the remote server comes back on its own, and then gets traffic again.
States: starting -> ready <-> unhealthy | ejected, -> draining -> stopped; a server not ready at
start is unhealthy (probed) until it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import numpy as np
import orjson

from dlproxy import kserve, protocol
from dlproxy.clock import MonotonicClock
from dlproxy.errors import InstanceFailed
from dlproxy.instances.base import BatchedInstance, FailureHandler, InstanceOptions, ignore_failure
from dlproxy.instances.health import OutlierDetector

log = logging.getLogger("dlproxy.instances")
_numbers = itertools.count(1)

BAD_INPUT = frozenset({400, 413, 422})
"""The request is wrong: any other instance would refuse it too."""
BUSY = frozenset({429, 503})
"""The upstream is alive but refuses work now: try another instance, do not count it an outlier."""


def redacted(url: str) -> str:
    """``url`` without the password of its user part: safe to log and show."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


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
        options: InstanceOptions,
        on_failure: FailureHandler = ignore_failure,
        *,
        outlier: OutlierDetector | None = None,
        health_interval: float = 1.0,
        unhealthy_after: int = 2,
        probe_timeout: float = 1.0,
    ) -> None:
        super().__init__(options, f"u{next(_numbers)}", on_failure)
        self._url = url.rstrip("/")  # what requests go to, with any user:password in it
        self.reference = redacted(self._url)  # what logs, errors and /admin/instances show
        self.model = model
        self.threads = 0
        self.outlier = outlier or OutlierDetector(MonotonicClock())
        self.health_interval = health_interval
        self.unhealthy_after = unhealthy_after
        self._client = client
        self._session: aiohttp.ClientSession | None = None
        # A batch held longer than the hang timeout counts as a failed request, as for a worker.
        self._request_timeout = aiohttp.ClientTimeout(
            total=options.hang_timeout, sock_connect=client.connect_timeout
        )
        self._probe_timeout = aiohttp.ClientTimeout(total=probe_timeout)
        self._phase = "starting"
        self._healthy = True
        self._posts: dict[asyncio.Future[Any], asyncio.Task[None]] = {}
        self._health: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()

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

    # --- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Read the model's metadata once the server says the model is ready. A server that is
        not (down, or still loading) does not hold the gateway's start: the instance starts
        unhealthy, without traffic, and joins by itself once the server answers."""
        self._phase = "starting"
        self._session = self._client.acquire()
        metadata = await self._ready_metadata()
        if metadata is None:
            log.warning(
                "upstream %s (%s) has no model '%s' ready: starting without it, probing",
                self.id,
                self.reference,
                self.model,
            )
            self._healthy = False
            self._phase = "running"
            self._health = asyncio.create_task(self._join(), name=f"join {self.id}")
            return
        self._run(metadata)

    def _run(self, metadata: dict[str, Any]) -> None:
        self._adopt(kserve.spec_of(self.model, metadata))  # it would refuse bigger batches
        self._healthy = True
        self._phase = "running"
        self._health = asyncio.create_task(self._check_health(), name=f"health {self.id}")
        log.info("upstream %s ready (%s, model %s)", self.id, self.reference, self.model)

    async def _join(self) -> None:
        """Probe a server that was not ready at start until it is, then serve from it."""
        while True:
            await asyncio.sleep(self.health_interval)
            metadata = await self._ready_metadata()
            if metadata is not None:
                self._run(metadata)
                return

    async def stop(self, drain: bool = True, drain_seconds: float = 30.0) -> None:
        """Stop taking requests, finish what is held (when ``drain``), then let go of the session."""
        self._phase = "draining"
        await self._drain(drain, drain_seconds)
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
                f"{self._url}/v2/models/{self.model}", timeout=self._probe_timeout
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
                f"{self._url}/v2/models/{self.model}/ready", timeout=self._probe_timeout
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
        return InstanceFailed(f"upstream {self.id} ({self.reference}) failed: {reason}", held=True)

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
        body, header_length = kserve.encode_infer_request(inputs, parameters)
        try:
            async with self._session.post(
                f"{self._url}/v2/models/{self.model}/infer",
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
                outputs = kserve.decode_infer_response(payload, length, items)
            except (ValueError, KeyError, TypeError) as exc:
                raise self._failed(f"its answer could not be decoded: {exc}") from None
            self.outlier.success()
            return protocol.Result(0, outputs, self.load)
        message = kserve.error_message(payload, status)
        if status in BAD_INPUT or status == 500:
            # It answered: the server is fine; 500 is what a dlproxy upstream says for a model error.
            self.outlier.success()
            return protocol.Failure(0, message, status in BAD_INPUT, self.load)
        if status in BUSY:
            raise InstanceFailed(f"upstream {self.id} ({self.reference}) is busy: {message}")
        raise self._failed(f"HTTP {status}: {message}")
