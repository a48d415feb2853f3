"""One scrape for N gateways (``--gateways N --admin-port P``): the supervisor serves ``/metrics``
on P, the sum of every gateway's own ``/metrics`` (each gateway listens on a private admin port).

Series with the same name and labels are added up (requests, latencies, queues, cache counters:
what a scrape of one server would show); a gateway's own process (``process_*``,
``dlproxy_build_info``) keeps one series per gateway, labelled ``gateway``; settings every
gateway shares (``dlproxy_memory_budget_bytes``, ``dlproxy_traffic_weight``) are shown once. A
gateway that does not answer is left out of that scrape and counted in
``dlproxy_gateways_scraped{result="failed"}``.
"""

from __future__ import annotations

import logging
import threading
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry

log = logging.getLogger("dlproxy.gateways")

PER_GATEWAY_PREFIXES = ("process_", "dlproxy_build_info")
SHARED = frozenset({"dlproxy_memory_budget_bytes", "dlproxy_traffic_weight"})


def merge(texts: dict[str, str]) -> list[Metric]:
    """Gateway name -> its /metrics text, to the families one scrape of all of them shows."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for gateway, text in texts.items():
        for family in text_string_to_metric_families(text):
            merged = families.setdefault(
                family.name, Metric(family.name, family.documentation, family.type, family.unit)
            )
            series = values.setdefault(merged.name, {})
            own = family.name.startswith(PER_GATEWAY_PREFIXES)
            for sample in family.samples:
                labels = dict(sample.labels)
                if own:
                    labels["gateway"] = gateway
                key = (sample.name, tuple(sorted(labels.items())))
                if family.name in SHARED:
                    series[key] = max(series.get(key, sample.value), sample.value)
                else:
                    series[key] = series.get(key, 0.0) + sample.value
    for name, family in families.items():
        for (sample_name, pairs), value in values[name].items():
            family.add_sample(sample_name, dict(pairs), value)
    return list(families.values())


class _Aggregate(Collector):
    def __init__(self, targets: dict[str, str]) -> None:
        self.targets = targets  # gateway name -> its /metrics URL
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(targets)))

    def collect(self) -> Iterator[Metric]:
        fetched = dict(
            zip(self.targets, self._pool.map(_fetch, self.targets.values()), strict=True)
        )
        texts = {name: text for name, text in fetched.items() if text is not None}
        yield from merge(texts)
        scraped = GaugeMetricFamily(
            "dlproxy_gateways_scraped",
            "Gateways this aggregated scrape read, or failed to read.",
            labels=["result"],
        )
        scraped.add_metric(["ok"], len(texts))
        scraped.add_metric(["failed"], len(fetched) - len(texts))
        yield scraped


def _fetch(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text: str = response.read().decode("utf-8")
            return text
    except OSError as exc:
        log.warning("metrics of %s not read: %s", url, exc)
        return None


class MetricsServer:
    """The supervisor's ``/metrics`` on ``host:port``, in a thread (the supervisor has no loop)."""

    def __init__(self, host: str, port: int, targets: dict[str, str]) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Aggregate(targets))

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self._answer(
                        404,
                        b'{"error": "with --gateways the supervisor serves /metrics only: '
                        b'other routes are on each gateway"}',
                        "application/json",
                    )
                    return
                self._answer(200, generate_latest(registry), CONTENT_TYPE_LATEST)

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # scrapes are not worth a log line each

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
