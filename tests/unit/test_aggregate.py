"""Summing the /metrics of N gateways into one scrape (aggregate.merge)."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry

from dlproxy.aggregate import merge

ONE = """# HELP dlproxy_requests Inference requests answered.
# TYPE dlproxy_requests counter
dlproxy_requests_total{code="200",model="echo"} 10.0
dlproxy_requests_total{code="400",model="echo"} 1.0
# HELP dlproxy_request_duration_seconds Request latency by stage.
# TYPE dlproxy_request_duration_seconds histogram
dlproxy_request_duration_seconds_bucket{le="0.01",model="echo"} 8.0
dlproxy_request_duration_seconds_bucket{le="+Inf",model="echo"} 10.0
dlproxy_request_duration_seconds_sum{model="echo"} 0.05
dlproxy_request_duration_seconds_count{model="echo"} 10.0
# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 100.0
# HELP dlproxy_memory_budget_bytes The memory budget.
# TYPE dlproxy_memory_budget_bytes gauge
dlproxy_memory_budget_bytes 1000.0
"""
TWO = ONE.replace(" 10.0\n", " 30.0\n").replace("100.0", "200.0")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_series_are_summed_a_process_stays_per_gateway_and_shared_settings_once() -> None:
    class Merged(Collector):
        def collect(self):  # type: ignore[no-untyped-def]
            return iter(merge({"1": ONE, "2": TWO}))

    registry = CollectorRegistry()
    registry.register(Merged())
    out = samples(generate_latest(registry).decode())
    ok = ("dlproxy_requests_total", (("code", "200"), ("model", "echo")))
    assert out[ok] == 40.0
    assert out["dlproxy_requests_total", (("code", "400"), ("model", "echo"))] == 2.0
    bucket = ("dlproxy_request_duration_seconds_bucket", (("le", "+Inf"), ("model", "echo")))
    assert out[bucket] == 40.0
    assert out["dlproxy_request_duration_seconds_sum", (("model", "echo"),)] == 0.1
    assert out["process_resident_memory_bytes", (("gateway", "1"),)] == 100.0
    assert out["process_resident_memory_bytes", (("gateway", "2"),)] == 200.0
    assert out["dlproxy_memory_budget_bytes", ()] == 1000.0  # the same budget, not twice
