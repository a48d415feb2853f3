from __future__ import annotations

import numpy as np
import pytest

from dlproxy.simulate.engine import Outcome, Timeline
from dlproxy.simulate.report import markdown, relative_to, summarise, table, windowed_quantile


def outcome(latency: list[float], refused: int, instance_seconds: float) -> Outcome:
    ticks = np.arange(1.0, 11.0)
    timeline = Timeline(ticks, ticks * 0 + 5, ticks * 0 + 2, ticks * 0, ticks * 0 + 2)
    return Outcome(
        accepted=np.linspace(0, 9, len(latency)),
        latency=np.array(latency),
        refused=np.full(refused, 5.0),
        instance_seconds=instance_seconds,
        duration=10.0,
        timeline=timeline,
    )


def test_a_violation_is_a_late_answer_or_a_refusal() -> None:
    row = summarise(
        "p",
        outcome([0.01, 0.02, 0.2, 0.3], refused=1, instance_seconds=20.0),
        0.1,
        cost_per_hour=3.6,
    )
    assert (row.requests, row.refused, row.violations) == (5, 1, 3)
    assert row.violation_pct == pytest.approx(60.0)
    assert row.cost == pytest.approx(0.02)
    assert row.mean_instances == pytest.approx(2.0)
    assert row.max_instances == 2
    assert row.p50_ms == pytest.approx(110.0)


def test_rows_are_compared_with_static_peak() -> None:
    rows = [
        summarise(name, outcome([0.01], 0, seconds), 0.1, 1.0)
        for name, seconds in (("a", 30.0), ("static at peak (4)", 40.0))
    ]
    a, peak = relative_to(rows, "static at peak (4)")
    assert a.vs_static_peak == pytest.approx(0.75)
    assert peak.vs_static_peak == 1.0
    assert "| a | 30 | 75% |" in markdown([a, peak])
    assert table([a, peak], "t").row_count == 2


def test_windowed_quantile_per_window() -> None:
    times = np.array([0.5, 1.0, 1.5, 12.0, 13.0, 25.0])
    values = np.array([3.0, 1.0, 2.0, 10.0, np.inf, 7.0])
    result = windowed_quantile(times, values, 10.0, 40.0, 0.99)
    assert result[:3].tolist() == [2.0, 10.0, 7.0]  # nearest rank: the second of three, ...
    assert np.isnan(result[3])
    assert windowed_quantile(times, values, 10.0, 40.0, 1.0)[1] == np.inf
