"""dlproxy's parts for one set of settings, made once: the instance pools, the gateway, the model
control and the ASGI app. ``start`` loads the instances (and starts the autoscaler and the
repository poll), ``stop`` drains them and flushes the cache. ``app.serve`` runs a Service behind
uvicorn; ``create_app`` (``dlproxy.create_app``) hands one to another ASGI server or framework.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import zmq.asyncio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from dlproxy import assembly
from dlproxy.autoscaler import Controller
from dlproxy.caching.base import MemoryCache
from dlproxy.caching.tiered import TieredCache
from dlproxy.gateway import Gateway, Limits
from dlproxy.http.auth import build_authenticator
from dlproxy.http.ratelimit import RateLimiter
from dlproxy.http.routes import InferenceApp
from dlproxy.metrics import MetricsOff, RequestMetrics
from dlproxy.settings import Settings

log = logging.getLogger("dlproxy")


class Service:
    """Everything one gateway serves, built from ``settings`` (resolved here)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings = settings.resolved()
        connect_backend(settings)
        self.context = zmq.asyncio.Context()
        try:
            models = assembly.deployments(settings)
            self.pools = assembly.build_pools(settings, self.context, models)
        except Exception:
            self.context.term()
            raise
        self.gateway = Gateway(
            self.pools,
            Limits(
                settings.max_items,
                settings.max_text_bytes,
                max_request_units=settings.max_request_units,
            ),
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
        self.control = None
        if settings.model_repository is not None:
            from dlproxy.lifecycle import ModelControl

            self.control = ModelControl(settings, self.context, self.gateway)
            if settings.memory_budget is not None:
                self.gateway.on_demand = self.control  # models load on their first request
                self.gateway.memory_budget = settings.memory_budget
        self.app = InferenceApp(
            self.gateway,
            settings.max_body_bytes,
            settings.request_timeout_ms,
            max_timeout_ms=settings.max_request_timeout_ms,
            limiter=limiter,
            access_log=settings.access_log,
            metrics=RequestMetrics() if settings.metrics else MetricsOff(),
            auth=build_authenticator(settings),
            repository=self.control,
        )
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start every instance (the gateway is ready once they are), then the background
        tasks: the autoscaler and the repository poll."""
        await assembly.start_pools(self.pools, self.settings.instances or 0)
        self.gateway.started = True
        log.info("ready")
        scaling = start_autoscaler(self.settings, self.gateway)
        if scaling is not None:
            self._tasks.append(scaling)
        if self.control is not None:
            self.control.remember()
            if self.settings.repository_poll_s:
                self._tasks.append(
                    asyncio.create_task(
                        self.control.poll(self.settings.repository_poll_s), name="repository poll"
                    )
                )

    def begin_stop(self) -> None:
        """The first thing a shutdown does (at the signal, while connections still finish):
        pending cache writes go to the shared cache now."""
        if self.gateway.cache is not None:
            self.gateway.cache.begin_close()

    async def stop(self, drain_seconds: float | None = None) -> None:
        """Stop the background tasks, drain the instances (up to ``drain_seconds``, default the
        graceful shutdown time), flush the cache, leave the Ray cluster."""
        for task in self._tasks:
            task.cancel()
        await self.gateway.close(
            self.settings.graceful_shutdown_s if drain_seconds is None else drain_seconds
        )
        self.context.term()
        disconnect_backend(self.settings)


class DlproxyApp:
    """dlproxy as an ASGI app for another server or framework (``dlproxy.create_app``). Its
    lifespan starts and drains the instances; mounted in FastAPI or Starlette (which do not run
    a mounted app's lifespan) pass ``app.lifespan`` to the outer app, e.g.
    ``FastAPI(lifespan=proxy.lifespan)`` then ``api.mount("/ml", proxy)``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.service: Service | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if self.service is None:
            response = Response(
                b'{"error": "dlproxy is not started: run its lifespan (FastAPI(lifespan='
                b'proxy.lifespan) when mounted)"}',
                503,
                media_type="application/json",
            )
            await response(scope, receive, send)
            return
        await self.service.app(scope, receive, send)

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Any = None) -> AsyncIterator[None]:
        """Start dlproxy for the block; drain it after."""
        service = Service(self.settings)
        try:
            await service.start()
        except BaseException:
            await service.stop(drain_seconds=1.0)
            raise
        self.service = service
        try:
            yield
        finally:
            self.service = None
            await service.stop()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        assert message["type"] == "lifespan.startup"
        context = self.lifespan()
        try:
            await context.__aenter__()
        except Exception as exc:
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        await context.__aexit__(None, None, None)
        await send({"type": "lifespan.shutdown.complete"})


def create_app(settings: Settings | None = None, **values: Any) -> DlproxyApp:
    """dlproxy as an ASGI app: ``create_app(Settings(models=["echo"]))`` or
    ``create_app(models=["echo"])``; serve it with any ASGI server, or mount it."""
    return DlproxyApp(settings if settings is not None else Settings(**values))


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
