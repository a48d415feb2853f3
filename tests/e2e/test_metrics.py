"""/metrics parses with prometheus_client's own parser and counts what happened; /stats agrees."""

from __future__ import annotations

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from serving import Server

NAMES = {
    "dlproxy_requests",
    "dlproxy_request_duration_seconds",
    "dlproxy_batch_size",
    "dlproxy_instances",
    "dlproxy_instance_inflight",
    "dlproxy_queue_depth",
    "dlproxy_rejected",
    "dlproxy_model_items",
    "dlproxy_coalesced_requests",
    "dlproxy_retries",
    "dlproxy_cache_requests",
}


def scrape(server: Server) -> dict[str, list[tuple[dict[str, str], float, str]]]:
    text = httpx.get(f"{server.url}/metrics").text
    families = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = [(s.labels, s.value, s.name) for s in family.samples]
    return families


def value(families: dict, name: str, sample: str, **labels: str) -> float:
    return sum(
        v
        for lab, v, n in families[name]
        if n == sample and all(lab.get(k) == x for k, x in labels.items())
    )


def test_metrics_count_requests_errors_and_items(echo_server: Server) -> None:
    before = scrape(echo_server)
    assert NAMES <= set(before)
    body = orjson.dumps(
        {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["m1", "m2"]}]}
    )
    for _ in range(5):
        assert (
            httpx.post(f"{echo_server.url}/v2/models/echo/infer", content=body).status_code == 200
        )
    httpx.post(f"{echo_server.url}/v2/models/echo/infer", content=b"{")
    httpx.post(f"{echo_server.url}/v2/models/nope/infer", content=body)
    after = scrape(echo_server)
    ok = "dlproxy_requests_total"
    assert (
        value(after, "dlproxy_requests", ok, model="echo", code="200")
        - value(before, "dlproxy_requests", ok, model="echo", code="200")
        == 5
    )
    assert (
        value(after, "dlproxy_requests", ok, model="echo", code="400")
        - value(before, "dlproxy_requests", ok, model="echo", code="400")
        == 1
    )
    assert value(after, "dlproxy_requests", ok, model="unknown", code="404") >= 1
    items = "dlproxy_model_items_total"
    assert (
        value(after, "dlproxy_model_items", items) - value(before, "dlproxy_model_items", items)
        == 10
    )
    assert value(after, "dlproxy_instances", "dlproxy_instances", model="echo", state="ready") == 2
    count = "dlproxy_request_duration_seconds_count"
    assert (
        value(after, "dlproxy_request_duration_seconds", count, stage="total")
        - value(before, "dlproxy_request_duration_seconds", count, stage="total")
        == 5
    )
    assert (
        value(after, "dlproxy_batch_size", "dlproxy_batch_size_sum")
        - value(before, "dlproxy_batch_size", "dlproxy_batch_size_sum")
        == 10
    )


def test_stats_json_has_the_same_figures(echo_server: Server) -> None:
    stats = httpx.get(f"{echo_server.url}/stats").json()
    families = scrape(echo_server)
    echo = stats["models"]["echo"]
    assert echo["instances"] == {"ready": 2}
    assert echo["items"] == value(families, "dlproxy_model_items", "dlproxy_model_items_total")
