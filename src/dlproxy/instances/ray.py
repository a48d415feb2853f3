"""An instance as a Ray actor: placed by Ray on any node of a cluster, driven like a local worker.

The actor loads the model with the same code as a worker process (``create_model``) and computes one
``protocol.Batch`` per call, answering ``protocol.Result`` or ``Failure`` bytes, so the gateway's
Batcher, scheduling, caching and failover are the ones local workers use. Calls are awaited as
asyncio futures: the event loop never blocks on Ray. An actor that dies (its process, or its whole
node) fails its in-flight batches with InstanceFailed (the gateway retries them elsewhere) and the
pool replaces it; Ray places the new actor on a node that is still alive.
States: starting -> ready -> (draining ->) stopped, or failed.

All calls to Ray are made in this module; ``ray`` is an optional dependency (``pip install
dlproxy[ray]``), imported only when ``--backend ray`` is chosen.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import time
from typing import Any

import msgspec
import ray
from ray.exceptions import RayActorError, RayError

from dlproxy import protocol
from dlproxy.errors import InstanceFailed, ModelError
from dlproxy.instances.base import BatchedInstance, FailureHandler, InstanceOptions, ignore_failure

log = logging.getLogger("dlproxy.instances")
_numbers = itertools.count(1)

START_ATTEMPTS = 3
"""Actors made for one instance before its start fails (one may land on a dying node)."""


def connect(address: str | None) -> None:
    """Join the Ray cluster at ``address`` (``HOST:PORT`` of its head), or start a local one.

    Called once, before the gateway serves: the only blocking Ray call the gateway makes."""
    if ray.is_initialized():
        return
    ray.init(
        address=address,
        logging_level=logging.WARNING,
        log_to_driver=False,
        configure_logging=False,
    )
    resources = ray.cluster_resources()
    log.info(
        "joined the Ray cluster at %s: %d node(s), %s CPU(s)",
        address or "(started locally)",
        len([n for n in ray.nodes() if n.get("Alive")]),
        resources.get("CPU", 0),
    )


class ModelActor:
    """The body of a Ray actor: one model, one batch at a time (as a worker process)."""

    def __init__(self, reference: str, threads: int, options: str = "") -> None:
        from dlproxy.models.registry import create_model
        from dlproxy.worker.main import LoadMeter

        self.model = create_model(reference, threads=threads, options=json.loads(options or "{}"))
        self.model.load()
        self.meter = LoadMeter()

    def ready(self) -> tuple[bytes, str, str]:
        """The Ready message, the node id and the node's name (``ray start --node-name``)."""
        node_id = ray.get_runtime_context().get_node_id()
        name = next((n.get("NodeName", "") for n in ray.nodes() if n.get("NodeID") == node_id), "")
        message = protocol.Ready(pid=os.getpid(), spec=self.model.spec)
        return protocol.encode(message), node_id, name

    def ping(self) -> None:
        """Answered at once while idle: how the gateway notices an idle actor (or node) is gone."""

    def run(self, data: bytes) -> bytes:
        """Compute one encoded Batch; a model error is answered, never raised (as a worker does)."""
        batch = protocol.decode_to_worker(data)
        assert isinstance(batch, protocol.Batch)
        started = time.perf_counter()
        try:
            inputs = {name: protocol.from_wire(t) for name, t in batch.inputs.items()}
            outputs = self.model.predict(inputs, batch.parameters)
            wire = {name: protocol.to_wire(array) for name, array in outputs.items()}
        except Exception as exc:
            bad_input = isinstance(exc, ValueError | TypeError | KeyError | UnicodeDecodeError)
            load = self.meter.update(time.perf_counter() - started)
            failure = protocol.Failure(batch.id, f"{type(exc).__name__}: {exc}", bad_input, load)
            return protocol.encode(failure)
        load = self.meter.update(time.perf_counter() - started)
        return protocol.encode(protocol.Result(batch.id, wire, load))


_RemoteActor: Any = None


def _actor_class() -> Any:
    """``ray.remote(ModelActor)``, made once (and only when a Ray instance is made)."""
    global _RemoteActor
    if _RemoteActor is None:
        _RemoteActor = ray.remote(ModelActor)
    return _RemoteActor


class RayInstance(BatchedInstance):
    """One Ray actor serving one model."""

    def __init__(
        self,
        reference: str,
        options: InstanceOptions,
        on_failure: FailureHandler = ignore_failure,
        *,
        threads: int,
        num_cpus: float = 1.0,
    ) -> None:
        super().__init__(options, f"r{next(_numbers)}", on_failure)
        self.reference = reference
        self.threads = threads
        self.num_cpus = num_cpus
        self.state = "starting"
        self.node: str | None = None
        self.node_id: str | None = None
        self.load = protocol.Load()
        self._actor: Any = None
        self._ids = itertools.count(1)
        self._pending: dict[asyncio.Future[Any], float] = {}  # future -> when it was sent
        self._watchdog: asyncio.Task[None] | None = None
        self._stopping = False
        self._loop = asyncio.get_running_loop()

    async def start(self) -> None:
        """Create the actor (Ray places it, spreading instances over nodes) and wait until its
        model is loaded. An actor that dies first is made again, up to ``START_ATTEMPTS`` times:
        Ray may place it on a node that is dying but not yet known dead; the next one lands on
        a live node."""
        self.state = "starting"
        try:
            async with asyncio.timeout(self.options.start_timeout):
                for attempt in range(1, START_ATTEMPTS + 1):
                    self._actor = self._create()
                    try:
                        ready, self.node_id, node_name = await _awaitable(
                            self._actor.ready.remote()
                        )
                        break
                    except RayActorError as exc:
                        await self._kill()
                        if attempt == START_ATTEMPTS:
                            raise
                        log.warning(
                            "instance %s: its actor died before it was ready (%s); again",
                            self.id,
                            str(exc).splitlines()[0],
                        )
        except (RayError, TimeoutError) as exc:
            await self._kill()
            self.state = "failed"
            if isinstance(exc, TimeoutError):
                reason = f"not ready in {self.options.start_timeout:.0f} s: is there a node with "
                reason += f"{self.num_cpus} free CPU(s) (--ray-num-cpus)?"
            else:
                reason = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
            raise RuntimeError(f"Ray actor for '{self.reference}' did not start: {reason}") from exc
        message = protocol.decode_from_worker(ready)
        assert isinstance(message, protocol.Ready)
        self.pid = message.pid
        self._adopt(message.spec)
        self.node = node_name or self.node_id
        self.state = "ready"
        self._watchdog = asyncio.create_task(self._watch(), name=f"watchdog {self.id}")
        log.info(
            "instance %s ready (Ray actor, node %s, pid %s, model %s)",
            self.id,
            self.node,
            self.pid,
            self.reference,
        )

    def _create(self) -> Any:
        return (
            _actor_class()
            .options(
                num_cpus=self.num_cpus,
                scheduling_strategy="SPREAD",
                max_restarts=0,  # the pool replaces it, failing over what it held
                runtime_env=_runtime_env(),
            )
            .remote(self.reference, self.threads, self.options.model_options)
        )

    async def stop(self, drain: bool = True, drain_seconds: float = 30.0) -> None:
        """Stop taking requests, finish what is held (when ``drain``), then kill the actor."""
        if self.state != "failed":
            self.state = "draining"
        await self._drain(drain, drain_seconds)
        self._stopping = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._fail_pending(f"instance {self.id} was stopped")
        await self._kill()
        self.state = "stopped"

    # --- the channel ------------------------------------------------------------------------

    def _send(
        self, inputs: dict[str, Any], parameters: dict[str, Any]
    ) -> asyncio.Future[protocol.Result | protocol.Failure]:
        """The Batcher's send: one actor call per batch; the future always settles."""
        future: asyncio.Future[protocol.Result | protocol.Failure] = self._loop.create_future()
        if self._actor is None or self.state == "failed":
            future.set_exception(InstanceFailed(f"instance {self.id} is not running"))
            return future
        wire = {name: protocol.to_wire(array) for name, array in inputs.items()}
        data = protocol.encode(protocol.Batch(next(self._ids), wire, parameters))
        self._pending[future] = time.monotonic()
        call = _awaitable(self._actor.run.remote(data))
        call.add_done_callback(lambda done: self._settle(future, done))
        return future

    def _settle(self, future: asyncio.Future[Any], call: asyncio.Future[bytes]) -> None:
        self._pending.pop(future, None)
        if future.done():  # failed already (the actor was declared dead or hung)
            if not call.cancelled():
                call.exception()
            return
        if call.cancelled():
            future.set_exception(InstanceFailed(f"instance {self.id}: the call was cancelled"))
            return
        exc = call.exception()
        if exc is None:
            try:
                message = protocol.decode_from_worker(call.result())
            except (msgspec.DecodeError, msgspec.ValidationError) as error:
                log.error("instance %s sent an undecodable reply: %s", self.id, error)
                future.set_exception(
                    ModelError(f"model '{self.reference}': its reply could not be decoded")
                )
                return
            if isinstance(message, protocol.Result | protocol.Failure):
                self.load = message.load
            future.set_result(message)
            return
        future.set_exception(
            InstanceFailed(f"instance {self.id} failed: {exc}".splitlines()[0], held=True)
        )
        if isinstance(exc, RayActorError):
            self._failed(f"its actor died ({type(exc).__name__})")
        else:  # Ray could not run the call (the method itself never raises): replace it
            self._failed(f"a call failed: {type(exc).__name__}")

    # --- failure ----------------------------------------------------------------------------

    def _failed(self, reason: str) -> None:
        """Once: stop taking work, fail over what is held, and let the pool replace us."""
        if self.state in ("failed", "stopped") or self._stopping:
            return
        log.warning("instance %s (node %s) %s; failing over", self.id, self.node, reason)
        self.state = "failed"
        orphans = self.batcher.drain_queue()
        self._fail_pending(f"instance {self.id} {reason}", held=True)
        self.on_failure(self, orphans)

    def _fail_pending(self, reason: str, held: bool = False) -> None:
        """Fail the batches the actor holds: it died or hung (``held``), or it was stopped."""
        pending, self._pending = self._pending, {}
        for future in pending:
            if not future.done():
                future.set_exception(InstanceFailed(reason, held=held))

    async def _watch(self) -> None:
        """Replace an actor that holds one batch longer than ``hang_timeout``, or that does not
        answer a ping while idle (a dead actor or node fails its calls, but an idle one has none)."""
        while self.state == "ready":
            await asyncio.sleep(
                min(1.0, self.options.hang_timeout / 4, self.options.heartbeat_timeout / 2)
            )
            oldest = min(self._pending.values(), default=None)
            if oldest is not None:
                held = time.monotonic() - oldest
                if held > self.batcher.hold_limit(self.options.hang_timeout):
                    self.hung += 1
                    self._failed(f"held a batch for {held:.1f} s")
                continue
            try:
                async with asyncio.timeout(self.options.heartbeat_timeout):
                    await _awaitable(self._actor.ping.remote())
            except RayActorError as exc:
                self._failed(f"its actor died ({type(exc).__name__})")
            except TimeoutError:
                self._failed(f"did not answer a ping in {self.options.heartbeat_timeout:.1f} s")
            except RayError as exc:
                self._failed(f"a ping failed: {type(exc).__name__}")

    async def _kill(self) -> None:
        actor, self._actor = self._actor, None
        if actor is not None:
            with contextlib.suppress(RayError, ValueError):
                await asyncio.to_thread(ray.kill, actor, no_restart=True)


def _awaitable(ref: Any) -> asyncio.Future[Any]:
    """An ObjectRef as an asyncio future of this loop (Ray settles it from its own thread)."""
    return asyncio.wrap_future(ref.future())


def _runtime_env() -> dict[str, Any] | None:
    """Actors use the gateway's model cache directory (``DLPROXY_HOME``) when it sets one."""
    home = os.environ.get("DLPROXY_HOME")
    return {"env_vars": {"DLPROXY_HOME": home}} if home else None
