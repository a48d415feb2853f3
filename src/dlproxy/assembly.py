"""Settings -> instance pools: what to serve (``--model`` and the repository) and how each
instance is made. The composition root (``app.py``) and run-time loading (``lifecycle.py``) both
build pools here, so a model loaded later is made exactly as one loaded at start.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import zmq.asyncio

from dlproxy.autoscaling.base import create_policy as create_scaling_policy
from dlproxy.autoscaling.limits import Limits as ScalingLimits
from dlproxy.autoscaling.limits import ScalingPlan
from dlproxy.batching.policy import AdaptiveBatching, BatchingPolicy, FixedBatching
from dlproxy.clock import MonotonicClock
from dlproxy.instances.base import FailureHandler, Instance, InstanceOptions
from dlproxy.instances.health import OutlierDetector
from dlproxy.instances.local import LocalInstance
from dlproxy.instances.pipeline import PipelineInstance
from dlproxy.instances.pool import InstancePool
from dlproxy.models.registry import model_name
from dlproxy.models.repository import Entry
from dlproxy.scheduling.base import create_policy
from dlproxy.settings import Settings, usable_cores

if TYPE_CHECKING:
    from dlproxy.instances.upstream import UpstreamClient, UpstreamInstance
from dlproxy.traffic import Split

log = logging.getLogger("dlproxy")


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
    split: Split | None = None  # the model's traffic between its versions, and its shadow
    cached: bool = True  # False: the model's config turned the result cache off for it
    options: str = ""  # a Python model's options, JSON, given to its setup()


def deployments(settings: Settings) -> list[Deployment]:
    """The ``--model`` references, then every version a repository entry serves (none with
    ``model_control = "explicit"`` or a memory budget: those load on request). Entries that cannot be served are
    logged with their reason and left out (the others serve)."""
    found = [Deployment(reference, model_name(reference)) for reference in settings.models]
    for index, deployment in enumerate(found):
        for earlier in found[:index]:
            if earlier.name == deployment.name:  # the second would shadow the first, undrained
                raise ValueError(
                    f"model '{deployment.name}' would be served twice (--model {earlier.reference} "
                    f"and --model {deployment.reference}): serve one, or give each its own "
                    "version in a model repository"
                )
    if (
        settings.model_repository is None
        or settings.model_control == "explicit"
        or settings.memory_budget is not None  # each loads on its first request
    ):
        return found
    from dlproxy.models import repository

    for entry in repository.scan(settings.model_repository):
        if any(d.name == entry.name for d in found):
            raise ValueError(f"model '{entry.name}' is both a --model and in the model repository")
        try:
            found += entry_deployments(entry, settings)
        except ValueError as exc:
            log.warning("model repository: %s is not served: %s", entry.name, exc)
    return found


def entry_deployments(entry: Entry, settings: Settings) -> list[Deployment]:
    """The versions of a repository entry to serve, with the entry's own settings; ValueError
    when the entry cannot be served at all."""
    for version in entry.versions:
        if version.error:
            log.warning(
                "model repository: %s version %s: %s", entry.name, version.number, version.error
            )
    if entry.error or not entry.served:
        raise ValueError(entry.error or "no version can be served")
    cache = entry.settings.get("cache")
    if cache is not None and cache not in ("none", settings.cache):
        raise ValueError(
            f'cache {cache!r}: a model may turn the result cache off ("none"); its policy is '
            f"the server's ({settings.cache!r}, --cache)"
        )

    own = Settings.model_validate({**settings.model_dump(), **entry.settings})
    references = {v.number: v.reference for v in entry.versions}
    options = {v.number: v.options for v in entry.versions}
    return [
        Deployment(
            references[number],
            entry.name,
            number,
            own,
            entry.settings.get("instances"),
            number == entry.default,
            entry.split,
            cache != "none",
            options[number],
        )
        for number in entry.served
    ]


def build_pools(
    settings: Settings, context: zmq.asyncio.Context, models: list[Deployment] | None = None
) -> list[InstancePool]:
    """One pool per model version, empty until ``start_pools``; with upstreams, each pool also
    gets one maker per remote server (weights: local instances first, then the upstreams)."""
    pools = []
    client = None
    if settings.upstreams:  # one HTTP session for every upstream, opened when one starts
        from dlproxy.instances.upstream import UpstreamClient

        client = UpstreamClient()
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
                own,
                next(weights, 1.0),
                instance_name(settings, next(numbers)),
                served_as=served_as,
                model_options=deployment.options,
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
            if client is not None
        ]
        pool = InstancePool(
            deployment.name,
            create_policy(own.policy),
            factory,
            remotes=remotes,
            version=deployment.version,
            initial=deployment.initial,
            scaling=scaling_plan(own),
            cached=deployment.cached,
        )
        pools.append(pool)
    return pools


def scaling_plan(settings: Settings) -> ScalingPlan | None:
    """How the autoscaler scales a model made with ``settings`` (``--autoscale``, or its own
    ``autoscale`` in a repository config), or None."""
    if not settings.autoscale:
        return None
    options: dict[str, float] = {}
    if settings.autoscale == "cost":
        options = {"cost_per_hour": settings.instance_cost_per_hour}
        if settings.slo_ms:
            options["slo"] = settings.slo_ms / 1000
    options.update(settings.scale_options)
    create_scaling_policy(settings.autoscale, **options)  # fail now on a bad name or option
    return ScalingPlan(
        settings.autoscale,
        options,
        ScalingLimits(
            min_instances=settings.min_instances,
            max_instances=settings.max_instances or usable_cores(),
            down_cooldown=settings.scale_down_cooldown_s,
        ),
    )


def default_versions(models: list[Deployment]) -> dict[str, str]:
    """The version each model's plain routes reach."""
    return {d.name: d.version for d in models if d.default}


def splits(models: list[Deployment]) -> dict[str, Split]:
    """The models that share their traffic between versions, or mirror it to a shadow."""
    return {d.name: d.split for d in models if d.split is not None}


def instance_options(
    settings: Settings,
    weight: float,
    name: str | None,
    depth: int | None = None,
    served_as: tuple[str, str] | None = None,
    model_options: str = "",
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
        model_options=model_options,
        by_length=settings.batch_by_length,
        fair=settings.fair_share,
        urgent_max_batch=settings.urgent_max_batch,
        client_weights=settings.client_weights,
        max_batch_tokens=settings.max_batch_tokens,
        borrow_threads=settings.borrow_threads or 0,
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
    from dlproxy.instances.upstream import UpstreamInstance

    return UpstreamInstance(
        client,
        url,
        pool.name,
        # A remote server batches and pipelines over its own workers, behind a longer round trip.
        instance_options(settings, weight, None, depth=max(4, settings.pipeline_depth)),
        outlier=OutlierDetector(
            MonotonicClock(),
            settings.outlier_failures,
            settings.outlier_base_ejection_s,
            may_eject=pool.may_eject,
        ),
        health_interval=settings.health_interval_s,
    )


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
