"""Prometheus metrics and the /stats figures, read at scrape time from the gateway's objects.

The hot path only bumps plain counters and cheap histograms (``RequestMetrics``, the batchers'
statistics); this module turns them into the metric families of ARCHITECTURE.md when asked.
Only the gateway exports metrics: workers report through their replies.
"""

from __future__ import annotations

import platform
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from dlproxy.histogram import LATENCY_BUCKETS, SIZE_BUCKETS, Histogram
from dlproxy.version import __version__

if TYPE_CHECKING:
    from dlproxy.batching.batcher import BatcherStatistics
    from dlproxy.gateway import Gateway
    from dlproxy.instances.pool import InstancePool

STATES = ("starting", "ready", "unhealthy", "ejected", "draining", "failed", "stopped")


class RequestMetrics:
    """Per-request figures recorded by the HTTP layer: one dict bump and one histogram add.

    ``version`` is the model version that answered ("" for a model served without versions, so
    its series are the same as before versions existed: Prometheus drops empty labels)."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str, str, int]] = Counter()
        self.rejected: Counter[tuple[str, str]] = Counter()
        self.connections: dict[str, int] = {}
        """Connections refused by ``http.connections`` (by reason): set by the server."""
        self.total: defaultdict[tuple[str, str], Histogram] = defaultdict(
            lambda: Histogram(LATENCY_BUCKETS)
        )

    def record(self, model: str, version: str, protocol: str, code: int, seconds: float) -> None:
        self.requests[model, version, protocol, code] += 1
        if code < 400:
            self.total[model, version].observe(seconds)

    def reject(self, model: str, reason: str) -> None:
        self.rejected[model, reason] += 1


class MetricsOff(RequestMetrics):
    """The null object for ``--no-metrics``: records nothing (for measuring what metrics cost)."""

    def record(self, model: str, version: str, protocol: str, code: int, seconds: float) -> None:
        pass

    def reject(self, model: str, reason: str) -> None:
        pass


def _histogram(
    name: str, doc: str, labels: list[str], series: dict[tuple[str, ...], Histogram]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=labels)
    for values, histogram in series.items():
        family.add_metric(list(values), histogram.cumulative(), histogram.sum)
    return family


def _merged(histograms: list[Histogram], bounds: tuple[float, ...]) -> Histogram:
    merged = Histogram(bounds)
    for h in histograms:
        merged.counts = [a + b for a, b in zip(merged.counts, h.counts, strict=True)]
        merged.sum += h.sum
    return merged


class GatewayCollector(Collector):
    def __init__(self, gateway: Gateway, requests: RequestMetrics) -> None:
        self.gateway = gateway
        self.requests = requests

    def collect(self) -> Iterator[Metric]:
        g, r = self.gateway, self.requests
        total = CounterMetricFamily(
            "dlproxy_requests",
            "Inference requests answered.",
            labels=["model", "version", "protocol", "code"],
        )
        for (model, version, protocol, code), n in r.requests.items():
            total.add_metric([model, version, protocol, str(code)], n)
        yield total
        durations: dict[tuple[str, ...], Histogram] = {}
        batch_sizes: dict[tuple[str, ...], Histogram] = {}
        instances = GaugeMetricFamily(
            "dlproxy_instances",
            "Instances per model version and state.",
            labels=["model", "version", "state"],
        )
        inflight = GaugeMetricFamily(
            "dlproxy_instance_inflight",
            "Requests sent to an instance and not yet answered.",
            labels=["model", "version", "instance"],
        )
        queue = GaugeMetricFamily(
            "dlproxy_queue_depth",
            "Requests waiting in the model version's instance queues.",
            labels=["model", "version"],
        )
        items = CounterMetricFamily(
            "dlproxy_model_items",
            "Items that reached a model.",
            labels=["model", "version", "instance"],
        )
        worker_memory = GaugeMetricFamily(
            "dlproxy_worker_memory_bytes",
            "Resident memory of an instance's worker process, as it last reported.",
            labels=["model", "version", "instance"],
        )
        tokens = CounterMetricFamily(
            "dlproxy_batch_tokens",
            "Tokens a text model ran (kind=real), and the padding it ran beside them to make "
            "each run rectangular (kind=padding): padding / (real + padding) is the waste.",
            labels=["model", "version", "kind"],
        )
        worker_cpu = GaugeMetricFamily(
            "dlproxy_worker_cpu_ratio",
            "CPU an instance's worker used, in cores (1.0 = one core busy), as it last reported.",
            labels=["model", "version", "instance"],
        )
        for pool in g.all_pools():
            name, version = pool.name, pool.version
            stats = [i.batcher.statistics() for i in pool.instances]
            durations[name, version, "queue"] = _merged(
                [s.queue_wait for s in stats], LATENCY_BUCKETS
            )
            durations[name, version, "inference"] = _merged(
                [s.inference for s in stats], LATENCY_BUCKETS
            )
            durations[name, version, "total"] = r.total[name, version]
            batch_sizes[name, version] = _merged([s.batch_size for s in stats], SIZE_BUCKETS)
            states = Counter(i.state for i in pool.instances)
            for state in STATES:
                instances.add_metric([name, version, state], states.get(state, 0))
            for instance, s in zip(pool.instances, stats, strict=True):
                inflight.add_metric([name, version, instance.id], s.inflight_requests)
                worker_memory.add_metric([name, version, instance.id], instance.load.rss_bytes)
                worker_cpu.add_metric([name, version, instance.id], instance.load.cpu_percent / 100)
                items.add_metric(
                    [name, version, instance.id],
                    pool.items_by_instance.get(instance.id, 0) + s.items,
                )
            for instance_id, n in pool.items_by_instance.items():
                if instance_id not in {i.id for i in pool.instances}:
                    items.add_metric([name, version, instance_id], n)
            queue.add_metric([name, version], sum(s.queued_requests for s in stats))
            real, padded = _tokens(pool, stats)
            if padded:  # text models only
                tokens.add_metric([name, version, "real"], real)
                tokens.add_metric([name, version, "padding"], padded - real)
        yield _histogram(
            "dlproxy_request_duration_seconds",
            "Request latency by stage.",
            ["model", "version", "stage"],
            durations,
        )
        yield _histogram(
            "dlproxy_batch_size",
            "Items per batch sent to a worker.",
            ["model", "version"],
            batch_sizes,
        )
        yield instances
        yield inflight
        yield queue
        yield items
        yield worker_memory
        yield worker_cpu
        yield tokens
        yield from _traffic_families(g)
        yield from _lifecycle_families(g)
        rejected = CounterMetricFamily(
            "dlproxy_rejected", "Requests refused at once.", labels=["model", "reason"]
        )
        for (model, reason), n in r.rejected.items():
            rejected.add_metric([model, reason], n)
        for reason, n in r.connections.items():  # before any request: no model
            rejected.add_metric(["", reason], n)
        yield rejected
        retries = CounterMetricFamily(
            "dlproxy_retries", "Requests retried on another instance.", labels=["model", "reason"]
        )
        for (model, reason), n in g.retries.items():
            retries.add_metric([model, reason], n)
        yield retries
        coalesced = CounterMetricFamily(
            "dlproxy_coalesced_requests",
            "Items that waited for an identical item in flight.",
            labels=["model"],
        )
        coalesced.add_metric(["all"], g.coalescer.coalesced if g.coalescer is not None else 0)
        yield coalesced
        scaling = CounterMetricFamily(
            "dlproxy_scaling_decisions",
            "Autoscaler changes to a pool.",
            labels=["model", "direction"],
        )
        for (model, direction), n in g.scaling_decisions.items():
            scaling.add_metric([model, direction], n)
        yield scaling
        yield from _cache_families(g)


def _lifecycle_families(g: Gateway) -> Iterator[Metric]:
    """Models loaded, unloaded and evicted at run time, their memory, and waits for loads."""
    families = {
        event: CounterMetricFamily(f"dlproxy_model_{event}s", doc, labels=["model", "reason"])
        for event, doc in (
            ("load", "Models loaded at run time, by reason (request, explicit, poll)."),
            ("load_failure", "Model loads that failed, by what asked for them."),
            ("unload", "Models unloaded, by reason (evicted, explicit, gone)."),
        )
    }
    for (model, event, reason), n in g.model_events.items():
        families["load_failure" if event == "load_failed" else event].add_metric([model, reason], n)
    yield from families.values()
    memory = GaugeMetricFamily(
        "dlproxy_model_memory_bytes",
        "Resident memory of a model version's workers, as they last reported.",
        labels=["model", "version"],
    )
    for pool in g.all_pools():
        memory.add_metric([pool.name, pool.version], pool.rss_bytes)
    yield memory
    if g.memory_budget is not None:
        budget = GaugeMetricFamily(
            "dlproxy_memory_budget_bytes", "The memory budget of the models loaded on demand."
        )
        budget.add_metric([], g.memory_budget)
        yield budget
    yield _histogram(
        "dlproxy_model_load_wait_seconds",
        "Time requests waited for their model to load.",
        ["model"],
        {(model,): h for model, h in g.load_waits.items()},
    )


def _traffic_families(g: Gateway) -> Iterator[Metric]:
    """The traffic split between versions and what the shadow versions did."""
    weights = GaugeMetricFamily(
        "dlproxy_traffic_weight",
        "Share of a model's plain-route requests sent to a version (traffic split).",
        labels=["model", "version"],
    )
    for model, split in g.splits.items():
        total = sum(split.weights.values())
        for version, weight in split.weights.items():
            weights.add_metric([model, version], weight / total)
    yield weights
    requests = CounterMetricFamily(
        "dlproxy_shadow_requests",
        "Copies of requests sent to a shadow version, by result.",
        labels=["model", "version", "result"],
    )
    durations: dict[tuple[str, ...], Histogram] = {}
    similarities: dict[tuple[str, ...], Histogram] = {}
    for (model, version), stats in g.shadows.items():
        requests.add_metric([model, version, "compared"], stats.requests)
        requests.add_metric([model, version, "error"], stats.errors)
        requests.add_metric([model, version, "dropped"], stats.dropped)
        durations[model, version] = stats.latency
        similarities[model, version] = stats.similarity
    yield requests
    yield _histogram(
        "dlproxy_shadow_duration_seconds",
        "Latency of the shadow version on its copies.",
        ["model", "version"],
        durations,
    )
    yield _histogram(
        "dlproxy_shadow_similarity",
        "Similarity of the shadow's answer to the client's (cosine for floats, worst row).",
        ["model", "version"],
        similarities,
    )


def _cache_families(g: Gateway) -> Iterator[Metric]:
    requests = CounterMetricFamily(
        "dlproxy_cache_requests", "Cache lookups by level and result.", labels=["level", "result"]
    )
    evictions = CounterMetricFamily(
        "dlproxy_cache_evictions", "Entries evicted to respect a bound.", labels=["level"]
    )
    entries = GaugeMetricFamily("dlproxy_cache_entries", "Entries held.", labels=["level"])
    errors = CounterMetricFamily(
        "dlproxy_cache_errors", "Errors talking to a shared cache level.", labels=["level"]
    )
    for level, stats in cache_levels(g).items():
        requests.add_metric([level, "hit"], stats.get("hits", 0))
        requests.add_metric([level, "miss"], stats.get("misses", 0))
        evictions.add_metric([level], stats.get("evictions", 0))
        entries.add_metric([level], stats.get("entries", 0))
        errors.add_metric([level], stats.get("errors", 0))
    yield requests
    yield evictions
    yield entries
    yield errors


def cache_levels(g: Gateway) -> dict[str, dict[str, Any]]:
    """Per level ("l1", "l2"), the cache's counters as a plain dict."""
    if g.cache is None:
        return {}
    levels: dict[str, dict[str, Any]] = {}
    for level, stats in g.cache.statistics().items():
        if stats is None:
            continue
        levels[level] = (
            stats
            if isinstance(stats, dict)
            else {k: getattr(stats, k) for k in getattr(stats, "__dataclass_fields__", {})}
        )
    return levels


class BuildCollector(Collector):
    """``dlproxy_build_info``: which dlproxy and Python answer (always 1)."""

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "dlproxy_build_info", "The running dlproxy (always 1).", labels=["version", "python"]
        )
        info.add_metric([__version__, platform.python_version()], 1)
        yield info


def registry_for(gateway: Gateway, requests: RequestMetrics) -> CollectorRegistry:
    """The gateway's families, its build, and the gateway process's own figures (``process_*``:
    CPU seconds, resident memory, open files; the workers' are ``dlproxy_worker_*``)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(gateway, requests))
    registry.register(BuildCollector())
    ProcessCollector(registry=registry)
    return registry


def stats(gateway: Gateway, requests: RequestMetrics) -> dict[str, Any]:
    """The same figures as /metrics, as JSON for scripts and the dashboard: per model its
    default version's figures, and with versions each version's under ``versions``."""
    models: dict[str, Any] = {}
    for name, versions in gateway.versions.items():
        default = gateway.pools[name]
        models[name] = _pool_stats(default, requests)
        if "" not in versions:
            models[name]["versions"] = {
                version: _pool_stats(pool, requests) for version, pool in versions.items()
            }
            split = gateway.splits.get(name)
            if split is not None and split.weights:
                total = sum(split.weights.values())
                models[name]["traffic"] = {v: w / total for v, w in split.weights.items()}
    return {
        "models": models,
        "cache": cache_levels(gateway),
        "coalesced": gateway.coalescer.coalesced if gateway.coalescer is not None else 0,
        "rejected": {f"{m}/{r}": n for (m, r), n in requests.rejected.items()},
        "shadow": {
            f"{model}/{version}": {
                "compared": s.requests,
                "errors": s.errors,
                "dropped": s.dropped,
                "latency_p50_s": s.latency.quantile(0.5),
                "latency_p99_s": s.latency.quantile(0.99),
                "similarity_mean": s.similarity.sum / s.requests if s.requests else None,
                "similarity_min": s.similarity_min if s.requests else None,
            }
            for (model, version), s in gateway.shadows.items()
        },
        "lifecycle": {
            "memory_budget_bytes": gateway.memory_budget,
            "memory_bytes": sum(pool.rss_bytes for pool in gateway.all_pools()),
            "events": {"/".join(key): n for key, n in gateway.model_events.items()},
            "load_waits": {
                model: {
                    "requests": h.count,
                    "p50_s": h.quantile(0.5),
                    "p99_s": h.quantile(0.99),
                }
                for model, h in gateway.load_waits.items()
            },
        },
    }


def _pool_stats(pool: InstancePool, requests: RequestMetrics) -> dict[str, Any]:
    name, version = pool.name, pool.version
    s = [i.batcher.statistics() for i in pool.instances]
    total = requests.total[name, version]
    batch = _merged([x.batch_size for x in s], SIZE_BUCKETS)
    answered = [
        (c, n) for (m, v, _, c), n in requests.requests.items() if m == name and v == version
    ]
    return {
        "version": version,
        "requests": sum(n for _, n in answered),
        "errors": sum(n for c, n in answered if c >= 400),
        "latency_p50_s": total.quantile(0.5),
        "latency_p99_s": total.quantile(0.99),
        "batch_size_mean": batch.sum / batch.count if batch.count else 0.0,
        "batches": batch.count,
        "queue_depth": sum(x.queued_requests for x in s),
        "inflight": sum(x.inflight_requests for x in s),
        "instances": Counter(i.state for i in pool.instances),
        "memory_bytes": pool.rss_bytes,
        "items": sum(x.items for x in s) + sum(pool.items_by_instance.values()),
        "padding_waste": _waste(pool, s),
        "latency_histogram": {"bounds": list(total.bounds), "counts": list(total.counts)},
        "batch_size_histogram": {"bounds": list(batch.bounds), "counts": list(batch.counts)},
    }


def _tokens(pool: InstancePool, stats: list[BatcherStatistics]) -> tuple[int, int]:
    """(real, padded) tokens the pool's model ran, instances that have left included."""
    real, padded = pool.retired_tokens
    return real + sum(x.tokens for x in stats), padded + sum(x.padded_tokens for x in stats)


def _waste(pool: InstancePool, stats: list[BatcherStatistics]) -> float:
    """Padding's share of the tokens the model ran (0 when it reports none)."""
    real, padded = _tokens(pool, stats)
    return (padded - real) / padded if padded else 0.0


def reference() -> str:
    """``docs/metrics.md``: every metric /metrics exposes, from the collectors themselves."""
    from dlproxy.gateway import Gateway, Limits

    gateway = Gateway([], Limits())
    gateway.memory_budget = 1  # so that the budget's gauge is listed too
    lines = [
        "# Metrics",
        "",
        "Generated from the collectors (`python -m dlproxy.metrics > docs/metrics.md`); a test",
        "fails when this file is stale. `GET /metrics` on the gateway (or on `--admin-port`).",
        "Labels: `model` and `version` (empty for a model served without versions, which",
        "Prometheus drops), `instance` (an instance id, e.g. `w1`). Counters are exposed with",
        "`_total`, histograms as `_bucket`, `_sum` and `_count`. Dashboard and alerts:",
        "`deploy/monitoring/`. With `--gateways N --admin-port P`, `/metrics` on P is the",
        "supervisor's: the sum of every gateway's series (`process_*` and `dlproxy_build_info`",
        "labelled `gateway`), plus `dlproxy_gateways_scraped{result}` (gateways read or not).",
        "",
        "| metric | type | labels | unit | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    registry = registry_for(gateway, RequestMetrics())
    for family in registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = list(getattr(family, "_labelnames", ()))
        if family.type == "histogram":
            labels.append("le")
        shown = ", ".join(f"`{label}`" for label in labels) or "-"
        lines.append(
            f"| `{name}` | {family.type} | {shown} | {_unit(family.name)} | {family.documentation} |"
        )
    return "\n".join(lines) + "\n"


def _unit(name: str) -> str:
    for suffix, unit in (
        ("_seconds", "seconds"),
        ("_bytes", "bytes"),
        ("_ratio", "cores"),
        ("_info", "-"),
        ("_weight", "share (0..1)"),
        ("_similarity", "cosine (-1..1)"),
        ("_size", "items"),
    ):
        if name.endswith(suffix):
            return unit
    return "count"


if __name__ == "__main__":
    print(reference(), end="")
