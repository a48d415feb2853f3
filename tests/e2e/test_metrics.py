"""/metrics parses with prometheus_client's own parser and counts what happened; /stats agrees."""

from __future__ import annotations

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dlproxy.models.builtin import minilm
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
        for lab, v, n in families.get(name, [])  # a family not yet exposed counts 0
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


def test_padding_is_counted_by_tokens_and_its_share_shown_in_stats(minilm_server: Server) -> None:
    """A batch of a short and a long text pads the short one to the long one's length:
    ``dlproxy_batch_tokens`` counts the real tokens and the padding, /stats its share."""
    short, long = "Hi.", "A much longer sentence, with many more words in it than the first one."
    before = scrape(minilm_server)
    body = orjson.dumps(
        {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": [short, long]}]}
    )
    reply = httpx.post(f"{minilm_server.url}/v2/models/minilm/infer", content=body, timeout=30)
    assert reply.status_code == 200
    after = scrape(minilm_server)
    sample = "dlproxy_batch_tokens_total"

    def added(kind: str) -> float:
        return value(after, "dlproxy_batch_tokens", sample, kind=kind) - value(
            before, "dlproxy_batch_tokens", sample, kind=kind
        )

    tokenizer = minilm.load_tokenizer()
    tokenizer.no_padding()
    lengths = [len(tokenizer.encode(text).ids) for text in (short, long)]  # with [CLS], [SEP]
    assert added("real") == sum(lengths)
    assert added("padding") == max(lengths) - min(lengths)
    stats = httpx.get(f"{minilm_server.url}/stats").json()["models"]["minilm"]
    totals = {k: value(after, "dlproxy_batch_tokens", sample, kind=k) for k in ("real", "padding")}
    assert stats["padding_waste"] == pytest.approx(
        totals["padding"] / (totals["real"] + totals["padding"])
    )
