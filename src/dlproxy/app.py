"""Composition root: settings -> pools of instances -> gateway -> HTTP app -> server, in one place."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any

import uvicorn
import zmq.asyncio

from dlproxy import assembly
from dlproxy.autoscaler import Controller
from dlproxy.caching.base import MemoryCache
from dlproxy.caching.tiered import TieredCache
from dlproxy.gateway import Gateway, Limits
from dlproxy.http.auth import build_authenticator
from dlproxy.http.ratelimit import RateLimiter
from dlproxy.http.routes import InferenceApp, PortScope
from dlproxy.metrics import MetricsOff, RequestMetrics
from dlproxy.settings import Settings

log = logging.getLogger("dlproxy")


class GatewayServer(uvicorn.Server):
    """uvicorn's server, except that a signal only ends ``serve()`` (uvicorn re-raises it, which
    would kill the process before the workers are drained and the cache flushed), and the time
    it came is kept: the workers' drain gets what is left of the graceful shutdown."""

    exit_requested_at: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.exit_requested_at is None:
            self.exit_requested_at = time.monotonic()
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


def connect_backend(settings: Settings) -> None:
    """Join the Ray cluster (``--backend ray``) before any instance is made; a no-op for local."""
    if settings.backend != "ray":
        return
    try:
        from dlproxy.instances.ray import connect
    except ImportError:
        raise SystemExit(
            "dlproxy serve: --backend ray needs Ray: pip install 'dlproxy[ray]'"
        ) from None
    connect(settings.ray_address)


def disconnect_backend(settings: Settings) -> None:
    """Leave the Ray cluster once every actor is stopped (a no-op for local)."""
    if settings.backend == "ray":
        import ray

        ray.shutdown()


def build_cache(settings: Settings) -> TieredCache | None:
    """The result cache the settings ask for, or None: L1 in-process (``--cache``), L2 shared
    (``--redis`` or ``--memcached``), or both. ``--cache none`` with an L2 means L2 only."""
    from dlproxy.caching.wire import SharedCache  # the shared levels load only when asked for

    l1 = None
    if settings.cache != "none":
        l1 = MemoryCache(
            settings.cache, settings.cache_size, settings.cache_bytes, settings.cache_ttl
        )
    if settings.redis and settings.memcached:
        raise ValueError(
            f"choose one shared cache level: redis '{settings.redis}' or memcached "
            f"'{settings.memcached}', not both"
        )
    timeout = settings.l2_timeout_ms / 1000
    l2: SharedCache | None = None
    if settings.redis:
        from dlproxy.caching.redis import RedisCache

        l2 = RedisCache(settings.redis, timeout=timeout, ttl=settings.cache_ttl)
    elif settings.memcached:
        from dlproxy.caching.memcached import MemcachedCache

        l2 = MemcachedCache(settings.memcached, timeout=timeout, ttl=settings.cache_ttl)
    if l1 is None and l2 is None:
        return None
    return TieredCache(
        l1,
        l2,
        settings.write_policy,
        max_dirty=settings.write_back_max_entries,
        flush_interval=settings.write_back_interval_ms / 1000,
    )


def uvicorn_config(
    settings: Settings, app: InferenceApp, port: int, operator: bool
) -> uvicorn.Config:
    """One listening port: the main one, or (``--admin-port``) the operators' one; each serves
    only its share of the routes when there are two."""
    served: Any = app if settings.admin_port is None else PortScope(app, operator)
    return uvicorn.Config(
        served,
        host=settings.host,
        port=port,
        loop="none",
        http="httptools",
        lifespan="off",
        # X-Forwarded-For only from the proxies named (uvicorn's middleware rewrites the client).
        proxy_headers=bool(settings.forwarded_allow_ips),
        forwarded_allow_ips=settings.forwarded_allow_ips or None,
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=max(1, round(settings.graceful_shutdown_s)),
        backlog=4096,
    )


def start_autoscaler(settings: Settings, gateway: Gateway) -> asyncio.Task[None] | None:
    """The autoscaler's loop, when ``--autoscale`` names a policy or a repository model may
    name its own; it scales each pool by the plan the pool was made with."""
    if not settings.autoscale and settings.model_repository is None:
        return None
    controller = Controller(
        gateway.all_pools,
        gateway.arrivals,
        gateway.scaling_decisions,
        settings.scale_interval_s,
    )
    plan = assembly.scaling_plan(settings)
    if plan is not None:
        log.info(
            "autoscaling with %s between %d and %d instances",
            plan.policy,
            plan.limits.min_instances,
            plan.limits.max_instances,
        )
    return asyncio.create_task(controller.run(), name="autoscaler")


async def serve(settings: Settings) -> None:
    """Listen at once (not ready until the models are loaded), serve until SIGINT/SIGTERM, drain."""
    settings = settings.resolved()
    connect_backend(settings)
    context = zmq.asyncio.Context()
    try:
        models = assembly.deployments(settings)
        pools = assembly.build_pools(settings, context, models)
    except ValueError as exc:  # a missing repository, a name served twice, a bad policy name
        context.term()
        raise SystemExit(f"dlproxy serve: {exc}") from None
    gateway = Gateway(
        pools,
        Limits(settings.max_items, settings.max_text_bytes),
        build_cache(settings),
        settings.coalesce,
        hedge_after=settings.hedge_ms / 1000 if settings.hedge_ms else None,
        defaults=assembly.default_versions(models),
        splits=assembly.splits(models),
    )
    limiter = (
        RateLimiter(settings.rate_limit, settings.rate_burst or max(1.0, settings.rate_limit))
        if settings.rate_limit
        else None
    )
    control = None
    if settings.model_repository is not None:
        from dlproxy.lifecycle import ModelControl

        control = ModelControl(settings, context, gateway)
        if settings.memory_budget is not None:
            gateway.on_demand = control  # models load on their first request
            gateway.memory_budget = settings.memory_budget
    app = InferenceApp(
        gateway,
        settings.max_body_bytes,
        settings.request_timeout_ms,
        limiter=limiter,
        access_log=settings.access_log,
        metrics=RequestMetrics() if settings.metrics else MetricsOff(),
        auth=build_authenticator(settings),
        repository=control,
    )
    server = GatewayServer(uvicorn_config(settings, app, settings.port, operator=False))
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
    serving = asyncio.create_task(server.serve(sockets=sockets), name="http server")
    starting = asyncio.create_task(
        assembly.start_pools(pools, settings.instances or 0), name="start instances"
    )
    done, _ = await asyncio.wait({serving, starting}, return_when=asyncio.FIRST_COMPLETED)
    if starting in done and starting.exception() is None:
        gateway.started = True
        log.info("ready")
        scaling = start_autoscaler(settings, gateway)
        polling = None
        if control is not None:
            control.remember()
            if settings.repository_poll_s:
                polling = asyncio.create_task(
                    control.poll(settings.repository_poll_s), name="repository poll"
                )
        await serving  # until a signal: uvicorn stops accepting and finishes in-flight requests
        for task in (scaling, polling):
            if task is not None:
                task.cancel()
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
    await gateway.close(drain_seconds=max(1.0, settings.graceful_shutdown_s - since))
    context.term()
    disconnect_backend(settings)
    if serving.done() and serving.exception() is not None:
        raise serving.exception()  # type: ignore[misc]
    if starting.done() and not starting.cancelled() and starting.exception() is not None:
        raise SystemExit(1)
