"""Prometheus metrics and the /stats figures, read at scrape time from the gateway's objects.

The hot path only bumps plain counters and cheap histograms (``RequestMetrics``, the batchers'
statistics); this module turns them into the metric families of ARCHITECTURE.md when asked.
Only the gateway exports metrics: workers report through their replies.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from dlproxy.histogram import LATENCY_BUCKETS, SIZE_BUCKETS, Histogram

if TYPE_CHECKING:
    from dlproxy.gateway import Gateway

STATES = ("starting", "ready", "unhealthy", "ejected", "draining", "failed", "stopped")


class RequestMetrics:
    """Per-request figures recorded by the HTTP layer: one dict bump and one histogram add."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self.rejected: Counter[tuple[str, str]] = Counter()
        self.total: defaultdict[str, Histogram] = defaultdict(lambda: Histogram(LATENCY_BUCKETS))

    def record(self, model: str, protocol: str, code: int, seconds: float) -> None:
        self.requests[model, protocol, code] += 1
        if code < 400:
            self.total[model].observe(seconds)

    def reject(self, model: str, reason: str) -> None:
        self.rejected[model, reason] += 1


class MetricsOff(RequestMetrics):
    """The null object for ``--no-metrics``: records nothing (for measuring what metrics cost)."""

    def record(self, model: str, protocol: str, code: int, seconds: float) -> None:
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
            "dlproxy_requests", "Inference requests answered.", labels=["model", "protocol", "code"]
        )
        for (model, protocol, code), n in r.requests.items():
            total.add_metric([model, protocol, str(code)], n)
        yield total
        durations: dict[tuple[str, ...], Histogram] = {}
        batch_sizes: dict[tuple[str, ...], Histogram] = {}
        instances = GaugeMetricFamily(
            "dlproxy_instances", "Instances per model and state.", labels=["model", "state"]
        )
        inflight = GaugeMetricFamily(
            "dlproxy_instance_inflight",
            "Requests sent to an instance and not yet answered.",
            labels=["model", "instance"],
        )
        queue = GaugeMetricFamily(
            "dlproxy_queue_depth",
            "Requests waiting in the model's instance queues.",
            labels=["model"],
        )
        items = CounterMetricFamily(
            "dlproxy_model_items", "Items that reached a model.", labels=["model", "instance"]
        )
        for name, pool in g.pools.items():
            stats = [i.batcher.statistics() for i in pool.instances]
            durations[name, "queue"] = _merged([s.queue_wait for s in stats], LATENCY_BUCKETS)
            durations[name, "inference"] = _merged([s.inference for s in stats], LATENCY_BUCKETS)
            durations[name, "total"] = r.total[name]
            batch_sizes[(name,)] = _merged([s.batch_size for s in stats], SIZE_BUCKETS)
            states = Counter(i.state for i in pool.instances)
            for state in STATES:
                instances.add_metric([name, state], states.get(state, 0))
            for instance, s in zip(pool.instances, stats, strict=True):
                inflight.add_metric([name, instance.id], s.inflight_requests)
                items.add_metric(
                    [name, instance.id], pool.items_by_instance.get(instance.id, 0) + s.items
                )
            for instance_id, n in pool.items_by_instance.items():
                if instance_id not in {i.id for i in pool.instances}:
                    items.add_metric([name, instance_id], n)
            queue.add_metric([name], sum(s.queued_requests for s in stats))
        yield _histogram(
            "dlproxy_request_duration_seconds",
            "Request latency by stage.",
            ["model", "stage"],
            durations,
        )
        yield _histogram(
            "dlproxy_batch_size", "Items per batch sent to a worker.", ["model"], batch_sizes
        )
        yield instances
        yield inflight
        yield queue
        yield items
        rejected = CounterMetricFamily(
            "dlproxy_rejected", "Requests refused at once.", labels=["model", "reason"]
        )
        for (model, reason), n in r.rejected.items():
            rejected.add_metric([model, reason], n)
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


def registry_for(gateway: Gateway, requests: RequestMetrics) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(gateway, requests))
    return registry


def stats(gateway: Gateway, requests: RequestMetrics) -> dict[str, Any]:
    """The same figures as /metrics, as JSON for scripts and the dashboard."""
    models: dict[str, Any] = {}
    for name, pool in gateway.pools.items():
        s = [i.batcher.statistics() for i in pool.instances]
        total = requests.total[name]
        batch = _merged([x.batch_size for x in s], SIZE_BUCKETS)
        models[name] = {
            "requests": sum(n for (m, _, _), n in requests.requests.items() if m == name),
            "errors": sum(
                n for (m, _, c), n in requests.requests.items() if m == name and c >= 400
            ),
            "latency_p50_s": total.quantile(0.5),
            "latency_p99_s": total.quantile(0.99),
            "batch_size_mean": batch.sum / batch.count if batch.count else 0.0,
            "batches": batch.count,
            "queue_depth": sum(x.queued_requests for x in s),
            "inflight": sum(x.inflight_requests for x in s),
            "instances": Counter(i.state for i in pool.instances),
            "items": sum(x.items for x in s) + sum(pool.items_by_instance.values()),
            "latency_histogram": {"bounds": list(total.bounds), "counts": list(total.counts)},
            "batch_size_histogram": {"bounds": list(batch.bounds), "counts": list(batch.counts)},
        }
    return {
        "models": models,
        "cache": cache_levels(gateway),
        "coalesced": gateway.coalescer.coalesced if gateway.coalescer is not None else 0,
        "rejected": {f"{m}/{r}": n for (m, r), n in requests.rejected.items()},
    }
