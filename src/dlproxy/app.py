"""The server: a Service (settings -> pools of instances -> gateway -> HTTP app) behind uvicorn,
on one port or two (``--admin-port``), with the signals and the graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import uvicorn

from dlproxy.http.connections import ConnectionLimits, guarded_protocol
from dlproxy.http.routes import InferenceApp, PortScope
from dlproxy.service import Service, connect_backend
from dlproxy.settings import Settings

__all__ = ["connect_backend", "serve"]

log = logging.getLogger("dlproxy")


class GatewayServer(uvicorn.Server):
    """uvicorn's server, except that a signal only ends ``serve()`` (uvicorn re-raises it, which
    would kill the process before the workers are drained and the cache flushed), and the time
    it came is kept: the workers' drain gets what is left of the graceful shutdown."""

    exit_requested_at: float | None = None
    loop: asyncio.AbstractEventLoop | None = None
    on_exit: Callable[[], None] | None = None
    """Run on ``loop`` at the first signal (``Service.begin_stop``)."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.exit_requested_at is None:
            self.exit_requested_at = time.monotonic()
            if self.loop is not None and self.on_exit is not None:
                self.loop.call_soon_threadsafe(self.on_exit)
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        original = {
            sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


class SecondServer(uvicorn.Server):
    """The admin port's server: it leaves the signals to the main server, which stops it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def uvicorn_config(
    settings: Settings, app: InferenceApp, port: int, operator: bool
) -> uvicorn.Config:
    """One listening port: the main one, or (``--admin-port``) the operators' one; each serves
    only its share of the routes when there are two."""
    served: Any = app if settings.admin_port is None else PortScope(app, operator)
    limits = ConnectionLimits(
        settings.max_connections,
        settings.header_timeout_s,
        settings.body_timeout_s,
        settings.max_header_bytes,
    )
    protocol = guarded_protocol(limits)
    if not operator:  # the main port's refusals are counted in dlproxy_rejected
        app.metrics.connections = protocol.refused
    return uvicorn.Config(
        served,
        host=settings.host,
        port=port,
        loop="none",
        http=protocol,
        lifespan="off",
        # X-Forwarded-For only from the proxies named (uvicorn's middleware rewrites the client).
        proxy_headers=bool(settings.forwarded_allow_ips),
        forwarded_allow_ips=settings.forwarded_allow_ips or None,
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=max(1, round(settings.graceful_shutdown_s)),
        backlog=4096,
    )


async def serve(settings: Settings) -> None:
    """Listen at once (not ready until the models are loaded; one of several gateways on a port
    listens once ready), serve until SIGINT/SIGTERM, drain."""
    try:
        service = Service(settings)
    except ValueError as exc:  # a missing repository, a name served twice, a bad policy name
        raise SystemExit(f"dlproxy serve: {exc}") from None
    settings, app = service.settings, service.app
    server = GatewayServer(uvicorn_config(settings, app, settings.port, operator=False))
    server.loop = asyncio.get_running_loop()
    server.on_exit = service.begin_stop
    log.info(
        "serving %s on http://%s:%s with %s instance(s) x %s thread(s), policy %s",
        ", ".join(settings.models),
        settings.host,
        settings.port,
        settings.instances,
        settings.threads,
        settings.policy,
    )
    sockets = None
    if settings.gateways > 1:  # one of several gateways: the kernel spreads connections
        from dlproxy.listen import reuse_port_socket

        sockets = [reuse_port_socket(settings.host, settings.port)]
    admin = None
    if settings.admin_port is not None:
        admin = SecondServer(uvicorn_config(settings, app, settings.admin_port, operator=True))
        admin_serving = asyncio.create_task(admin.serve(), name="admin http server")
        log.info("admin routes, metrics and stats on port %s only", settings.admin_port)
    starting = asyncio.create_task(service.start(), name="start instances")
    if sockets is not None:
        # One of several gateways on a shared port: listen only once ready, or the kernel would
        # hand this one its share of new connections to answer 503 while its models load (at
        # boot, and after a restart, while the other gateways could serve them).
        await _started_unless_signalled(server, starting)
    serving = asyncio.create_task(server.serve(sockets=sockets), name="http server")
    done, _ = await asyncio.wait({serving, starting}, return_when=asyncio.FIRST_COMPLETED)
    if starting.cancelled():  # a signal while one gateway of several was starting
        await serving  # should_exit is already set: uvicorn closes at once
    elif starting in done and starting.exception() is None:
        await serving  # until a signal: uvicorn stops accepting and finishes in-flight requests
    elif starting in done:
        log.error("could not start the instances: %s", starting.exception())
        server.should_exit = True
        await serving
    else:
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await starting
    if admin is not None:
        admin.should_exit = True
        with contextlib.suppress(Exception):
            await admin_serving
    since = time.monotonic() - (server.exit_requested_at or time.monotonic())
    with _patient_signals():
        await service.stop(drain_seconds=max(1.0, settings.graceful_shutdown_s - since))
    if serving.done() and serving.exception() is not None:
        raise serving.exception()  # type: ignore[misc]
    if starting.done() and not starting.cancelled() and starting.exception() is not None:
        raise SystemExit(1)


async def _started_unless_signalled(server: GatewayServer, starting: asyncio.Task[None]) -> None:
    """Wait for the instances to start; a signal meanwhile stops the start (``serve`` then
    returns at once: uvicorn sees ``should_exit`` already set)."""
    with server.capture_signals():
        while not starting.done() and not server.should_exit:
            await asyncio.wait({starting}, timeout=0.1)
    if not starting.done():
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await starting


@contextlib.contextmanager
def _patient_signals() -> Iterator[None]:
    """While the workers drain and the cache flushes, another SIGTERM or SIGINT (an impatient
    supervisor, a second Ctrl-C) is noted, not obeyed: obeying would lose pending cache writes.
    The graceful shutdown time still bounds the wait; SIGKILL still stops at once."""

    def note(sig: int, frame: FrameType | None) -> None:
        log.warning("already shutting down: draining and flushing the cache (SIGKILL stops now)")

    original = {sig: signal.signal(sig, note) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in original.items():
            signal.signal(sig, handler)
