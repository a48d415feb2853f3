"""The bench summary: percentiles, counts, the ``--json`` keys, the table and the plot."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from dlproxy.bench.loadgen import LoadSpec, Recording
from dlproxy.bench.report import Report, latency_ms, per_second

JSON_KEYS = {
    "kind",
    "refusal_latency_ms",
    "url",
    "target",
    "model",
    "protocol",
    "mode",
    "concurrency",
    "rate",
    "inputs",
    "items_per_request",
    "seed",
    "warmup_s",
    "duration_s",
    "requests",
    "ok",
    "errors",
    "error_rate",
    "offered",
    "dropped",
    "throughput_rps",
    "request_rate",
    "items_per_s",
    "latency_ms",
    "errors_by_status",
    "instances",
    "cache",
    "cache_hit_ratio",
    "throughput_per_s",
}


def _recording(rate: float | None = None) -> Recording:
    """Ten requests over two seconds: eight 200s (10..80 ms), one 503, one connection error."""
    latency = np.array([10, 20, 30, 40, 50, 60, 70, 80, 1, 2], dtype=np.float64) / 1000
    start = np.array([0.1, 0.2, 0.3, 0.4, 1.1, 1.2, 1.3, 1.4, 0.5, 1.5])
    status = np.array([200] * 8 + [503, 0], dtype=np.int32)
    spec = LoadSpec(
        url="http://127.0.0.1:1/", model="echo", duration=2.0, warmup=0.5, items=4, rate=rate
    )
    return Recording(
        spec=spec,
        inputs="zipf:1:1000",
        start_s=start,
        latency_s=latency,
        status=status,
        errors={"503": 1, "0:ClientConnectorError": 1},
        cache={"miss": 6, "l1": 2},
        instances={"a": 5, "b": 4},
        dropped=0,
        offered=0,
    )


def test_latency_percentiles_match_numpy() -> None:
    samples = np.random.default_rng(0).lognormal(mean=-4, sigma=1, size=10_001)
    figures = latency_ms(samples)
    ms = samples * 1000
    for key, q in (("p50", 50), ("p90", 90), ("p99", 99), ("p99_9", 99.9)):
        assert figures[key] == pytest.approx(np.percentile(ms, q), abs=1e-3)
    assert figures["max"] == pytest.approx(ms.max(), abs=1e-3)
    assert figures["mean"] == pytest.approx(ms.mean(), abs=1e-3)


def test_latency_percentiles_on_known_data() -> None:
    figures = latency_ms(np.arange(1, 1001, dtype=np.float64) / 1000)  # 1..1000 ms
    assert figures["p50"] == pytest.approx(500.5)
    assert figures["p90"] == pytest.approx(900.1)
    assert figures["max"] == pytest.approx(1000.0)


def test_no_samples_gives_nulls() -> None:
    assert set(latency_ms(np.array([])).values()) == {None}


def test_per_second_bins_and_clips() -> None:
    assert per_second(np.array([0.1, 0.9, 1.0, 2.5, 3.1, -0.1]), 3.0) == [2, 1, 1]


def test_to_dict_has_the_documented_keys_and_figures() -> None:
    data = Report(_recording()).to_dict()
    assert set(data) == JSON_KEYS
    assert set(data["latency_ms"]) == {"mean", "p50", "p90", "p99", "p99_9", "max"}
    assert (data["requests"], data["ok"], data["errors"]) == (10, 8, 2)
    assert data["error_rate"] == pytest.approx(0.2)
    assert data["throughput_rps"] == pytest.approx(4.0)
    assert data["request_rate"] == pytest.approx(5.0)
    assert data["items_per_s"] == pytest.approx(16.0)
    assert data["latency_ms"]["max"] == pytest.approx(80.0)  # errors are not in latency figures
    assert data["latency_ms"]["p50"] == pytest.approx(45.0)
    assert data["errors_by_status"] == {"0:ClientConnectorError": 1, "503": 1}
    assert data["refusal_latency_ms"]["max"] is not None  # the 503, not the connection error
    assert data["cache_hit_ratio"] == pytest.approx(0.25)
    assert data["throughput_per_s"] == [4, 4]
    assert data["mode"] == "closed"
    assert data["concurrency"] == 32
    assert data["rate"] is None
    assert data["target"] == "http://127.0.0.1:1/v2/models/echo/infer"


def test_open_loop_report_names_the_rate() -> None:
    data = Report(_recording(rate=50.0)).to_dict()
    assert (data["mode"], data["rate"], data["concurrency"]) == ("open", 50.0, None)


def test_table_renders() -> None:
    out = io.StringIO()
    Console(file=out, width=120).print(Report(_recording()).table())
    text = out.getvalue()
    assert "503: 1" in text
    assert "p99.9" in text


def test_plot_writes_a_png(tmp_path: Path) -> None:
    path = tmp_path / "bench.png"
    Report(_recording()).plot(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
