"""Composition root: settings -> pools of instances -> gateway -> HTTP app -> server, in one place."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import itertools
import logging
import signal
from collections.abc import Iterator
from dataclasses import dataclass

import uvicorn
import zmq.asyncio

from dlproxy.autoscaler import Controller
from dlproxy.autoscaling.base import create_policy as create_scaling_policy
from dlproxy.autoscaling.limits import Limits as ScalingLimits
from dlproxy.batching.policy import AdaptiveBatching, BatchingPolicy, FixedBatching
from dlproxy.caching.base import MemoryCache
from dlproxy.caching.tiered import TieredCache
from dlproxy.clock import MonotonicClock
from dlproxy.gateway import Gateway, Limits
from dlproxy.http.auth import build_authenticator
from dlproxy.http.ratelimit import RateLimiter
from dlproxy.http.routes import InferenceApp
from dlproxy.instances.base import FailureHandler, Instance, InstanceOptions
from dlproxy.instances.health import OutlierDetector
from dlproxy.instances.local import LocalInstance
from dlproxy.instances.pipeline import PipelineInstance
from dlproxy.instances.pool import InstancePool
from dlproxy.instances.upstream import UpstreamClient, UpstreamInstance
from dlproxy.metrics import MetricsOff, RequestMetrics
from dlproxy.models.registry import model_name
from dlproxy.scheduling.base import create_policy
from dlproxy.settings import Settings, usable_cores

log = logging.getLogger("dlproxy")


class GatewayServer(uvicorn.Server):
    """uvicorn's server, except that a signal only ends ``serve()`` (uvicorn re-raises it, which
    would kill the process before the workers are drained and the cache flushed)."""

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


@dataclass(frozen=True)
class Deployment:
    """One model (version) to serve: what to load, the name and version it is served as, and the
    settings its instances are made with (a repository model's own, else the server's)."""

    reference: str
    name: str
    version: str = ""  # "" for a model served without versions (--model)
    settings: Settings | None = None
    initial: int | None = None  # instances to start with, when the model sets its own
    default: bool = True


def deployments(settings: Settings) -> list[Deployment]:
    """The ``--model`` references, then every version a repository entry serves. Entries that
    cannot be served are logged with their reason and left out (the others serve)."""
    found = [Deployment(reference, model_name(reference)) for reference in settings.models]
    if settings.model_repository is None:
        return found
    from dlproxy.models import repository

    for entry in repository.scan(settings.model_repository):
        for version in entry.versions:
            if version.error:
                log.warning(
                    "model repository: %s version %s: %s", entry.name, version.number, version.error
                )
        if entry.error or not entry.served:
            log.warning(
                "model repository: %s is not served: %s",
                entry.name,
                entry.error or "no servable version",
            )
            continue
        if any(d.name == entry.name for d in found):
            raise ValueError(f"model '{entry.name}' is both a --model and in the model repository")
        try:
            own = Settings.model_validate({**settings.model_dump(), **entry.settings})
        except ValueError as exc:
            log.warning("model repository: %s is not served: its config: %s", entry.name, exc)
            continue
        references = {v.number: v.reference for v in entry.versions}
        for number in entry.served:
            found.append(
                Deployment(
                    references[number],
                    entry.name,
                    number,
                    own,
                    entry.settings.get("instances"),
                    number == entry.default,
                )
            )
    return found


def build_pools(
    settings: Settings, context: zmq.asyncio.Context, models: list[Deployment] | None = None
) -> list[InstancePool]:
    """One pool per model version, empty until ``start_pools``; with upstreams, each pool also
    gets one maker per remote server (weights: local instances first, then the upstreams)."""
    pools = []
    client = UpstreamClient()  # one HTTP session for every upstream, opened when one starts
    upstream_weights = (settings.weights or [])[settings.instances or 0 :]
    numbers = itertools.count(1)
    for deployment in deployments(settings) if models is None else models:
        own = deployment.settings or settings
        weights = iter(own.weights or [])
        served_as = (deployment.name, deployment.version) if deployment.version else None

        def factory(
            on_failure: FailureHandler,
            deployment: Deployment = deployment,
            own: Settings = own,
            weights: Iterator[float] = weights,
            served_as: tuple[str, str] | None = served_as,
        ) -> Instance:
            options = instance_options(
                own, next(weights, 1.0), instance_name(settings, next(numbers)), served_as=served_as
            )
            return build_instance(own, context, deployment.reference, options, on_failure)

        remotes = [
            functools.partial(
                build_upstream,
                settings,
                client,
                url,
                upstream_weights[i] if i < len(upstream_weights) else 1.0,
            )
            for i, url in enumerate(settings.upstreams)
        ]
        pool = InstancePool(
            deployment.name,
            create_policy(own.policy),
            factory,
            remotes=remotes,
            version=deployment.version,
            initial=deployment.initial,
        )
        pools.append(pool)
    return pools


def default_versions(models: list[Deployment]) -> dict[str, str]:
    """The version each model's plain routes reach."""
    return {d.name: d.version for d in models if d.default}


def instance_options(
    settings: Settings,
    weight: float,
    name: str | None,
    depth: int | None = None,
    served_as: tuple[str, str] | None = None,
) -> InstanceOptions:
    """What every kind of instance takes from the settings: queue, batching, failure timeouts."""
    return InstanceOptions(
        max_queue_items=settings.max_queue,
        batching=functools.partial(build_batching, settings),
        # K pipeline stages can work on K batches at once: let the instance hold that many.
        depth=depth or max(settings.pipeline_depth, settings.pipeline_stages),
        weight=weight,
        name=name,
        max_queue_wait=settings.max_queue_wait_ms / 1000 if settings.max_queue_wait_ms else None,
        hang_timeout=settings.hang_timeout_s,
        heartbeat_timeout=settings.heartbeat_timeout_s,
        served_as=served_as,
    )


def build_instance(
    settings: Settings,
    context: zmq.asyncio.Context,
    reference: str,
    options: InstanceOptions,
    on_failure: FailureHandler,
) -> Instance:
    """A worker process, K pipeline stage processes (``--pipeline-stages``) or a Ray actor."""
    threads = settings.threads or 1
    if settings.backend == "ray":
        from dlproxy.instances.ray import RayInstance

        options = dataclasses.replace(options, depth=settings.pipeline_depth)
        return RayInstance(
            reference, options, on_failure, threads=threads, num_cpus=settings.ray_num_cpus
        )
    if settings.pipeline_stages > 1:
        return PipelineInstance(
            context,
            reference,
            options,
            on_failure,
            threads=threads,
            stages=settings.pipeline_stages,
        )
    return LocalInstance(context, reference, options, on_failure, threads=threads)


def instance_name(settings: Settings, number: int) -> str | None:
    """With several gateways an instance id names its gateway (``g2.w1``), so the
    ``X-Dlproxy-Instance`` header shows which gateway answered; else the instance's default."""
    if settings.gateways == 1:
        return None
    kind = "r" if settings.backend == "ray" else "w"
    return f"g{settings.gateway_index}.{kind}{number}"


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


def build_batching(settings: Settings) -> BatchingPolicy:
    """A fresh batch-limit policy for one instance: each adapts to its own latencies."""
    max_delay = settings.max_delay_ms / 1000
    if settings.batching == "adaptive":
        assert settings.slo_ms is not None  # Settings checks it
        return AdaptiveBatching(settings.slo_ms / 1000, settings.max_batch, max_delay=max_delay)
    return FixedBatching(settings.max_batch, max_delay)


def build_upstream(
    settings: Settings, client: UpstreamClient, url: str, weight: float, pool: InstancePool
) -> UpstreamInstance:
    """A remote KServe v2 server as an instance of the pool's model (same name there)."""
    return UpstreamInstance(
        client,
        url,
        pool.name,
        # A remote server batches and pipelines over its own workers, behind a longer round trip.
        instance_options(settings, weight, None, depth=max(4, settings.pipeline_depth)),
        outlier=OutlierDetector(
            MonotonicClock(), settings.outlier_failures, settings.outlier_base_ejection_s
        ),
        health_interval=settings.health_interval_s,
    )


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
    """The autoscaler's loop, when ``--autoscale`` names a policy."""
    if not settings.autoscale:
        return None
    name = settings.autoscale
    options: dict[str, float] = {}
    if name == "cost":
        options = {"cost_per_hour": settings.instance_cost_per_hour}
        if settings.slo_ms:
            options["slo"] = settings.slo_ms / 1000
    options.update(settings.scale_options)
    create_scaling_policy(name, **options)  # fail now, not at the first tick, on a bad name
    limits = ScalingLimits(
        min_instances=settings.min_instances,
        max_instances=settings.max_instances or usable_cores(),
        down_cooldown=settings.scale_down_cooldown_s,
    )
    controller = Controller(
        list(gateway.pools.values()),
        gateway.arrivals,
        gateway.scaling_decisions,
        lambda: create_scaling_policy(name, **options),
        limits,
        settings.scale_interval_s,
    )
    log.info(
        "autoscaling with %s between %d and %d instances",
        name,
        limits.min_instances,
        limits.max_instances,
    )
    return asyncio.create_task(controller.run(), name="autoscaler")


async def start_pools(pools: list[InstancePool], instances: int) -> None:
    """Start every instance of every model at once, local workers and remote servers; each takes
    traffic as soon as it is ready."""
    await asyncio.gather(
        *(
            pool.add()
            for pool in pools
            for _ in range(instances if pool.initial is None else pool.initial)
        ),
        *(pool.attach(make(pool)) for pool in pools for make in pool.remotes),
    )


async def serve(settings: Settings) -> None:
    """Listen at once (not ready until the models are loaded), serve until SIGINT/SIGTERM, drain."""
    settings = settings.resolved()
    connect_backend(settings)
    context = zmq.asyncio.Context()
    try:
        models = deployments(settings)
    except ValueError as exc:  # a missing repository, or one name served twice
        raise SystemExit(f"dlproxy serve: {exc}") from None
    pools = build_pools(settings, context, models)
    gateway = Gateway(
        pools,
        Limits(settings.max_items, settings.max_text_bytes),
        build_cache(settings),
        settings.coalesce,
        hedge_after=settings.hedge_ms / 1000 if settings.hedge_ms else None,
        defaults=default_versions(models),
    )
    limiter = (
        RateLimiter(settings.rate_limit, settings.rate_burst or max(1.0, settings.rate_limit))
        if settings.rate_limit
        else None
    )
    app = InferenceApp(
        gateway,
        settings.max_body_bytes,
        settings.request_timeout_ms,
        limiter=limiter,
        access_log=settings.access_log,
        metrics=RequestMetrics() if settings.metrics else MetricsOff(),
        auth=build_authenticator(settings),
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="none",
        http="httptools",
        lifespan="off",
        proxy_headers=False,
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=30,
        backlog=4096,
    )
    server = GatewayServer(config)
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
    serving = asyncio.create_task(server.serve(sockets=sockets), name="http server")
    starting = asyncio.create_task(
        start_pools(pools, settings.instances or 0), name="start instances"
    )
    done, _ = await asyncio.wait({serving, starting}, return_when=asyncio.FIRST_COMPLETED)
    if starting in done and starting.exception() is None:
        gateway.started = True
        log.info("ready")
        scaling = start_autoscaler(settings, gateway)
        await serving  # until a signal: uvicorn stops accepting and finishes in-flight requests
        if scaling is not None:
            scaling.cancel()
    elif starting in done:
        log.error("could not start the instances: %s", starting.exception())
        server.should_exit = True
        await serving
    else:
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await starting
    await gateway.close()
    context.term()
    disconnect_backend(settings)
    if serving.done() and serving.exception() is not None:
        raise serving.exception()  # type: ignore[misc]
    if starting.done() and not starting.cancelled() and starting.exception() is not None:
        raise SystemExit(1)
