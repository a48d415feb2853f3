from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dlproxy.simulate.traces import (
    BASE_RATE,
    PEAK_RATE,
    Trace,
    bursty_trace,
    diurnal_trace,
    file_trace,
    parse_trace,
    step_trace,
)


def test_step_jumps_up_for_the_middle_third() -> None:
    trace = step_trace(300)
    assert trace.duration == 300
    assert trace.rate_at(50) == BASE_RATE
    assert trace.rate_at(150) == PEAK_RATE
    assert trace.rate_at(250) == BASE_RATE


def test_bursty_has_bursts_on_a_base_and_is_seeded() -> None:
    trace = bursty_trace(3600, seed=4)
    assert np.median(trace.rates) == pytest.approx(BASE_RATE, rel=0.1)
    assert trace.rates.max() > 2 * BASE_RATE
    assert np.array_equal(trace.rates, bursty_trace(3600, seed=4).rates)
    assert not np.array_equal(trace.rates, bursty_trace(3600, seed=5).rates)


def test_diurnal_starts_at_night_and_peaks_at_midday() -> None:
    trace = diurnal_trace(3600, seed=1)
    night, midday = trace.rates[:60].mean(), trace.rates[1770:1830].mean()
    assert night == pytest.approx(0.1 * PEAK_RATE, rel=0.2)
    assert midday == pytest.approx(PEAK_RATE, rel=0.1)


def test_arrivals_follow_the_rate_and_are_sorted() -> None:
    trace = Trace("t", np.array([100.0] * 50 + [1000.0] * 50))
    arrivals = trace.arrivals(seed=1)
    assert np.all(np.diff(arrivals) >= 0)
    assert arrivals.size == pytest.approx(100 * 50 + 1000 * 50, rel=0.03)
    second_half = np.count_nonzero(arrivals >= 50)
    assert second_half == pytest.approx(50_000, rel=0.03)
    assert np.array_equal(arrivals, trace.arrivals(seed=1))


def test_file_trace_interpolates_and_skips_a_header(tmp_path: Path) -> None:
    path = tmp_path / "load.csv"
    path.write_text("time,rate\n0,100\n10,200\n# a comment\n20,200\n", encoding="utf-8")
    trace = file_trace(path)
    assert trace.duration == 20
    assert trace.rate_at(0) == pytest.approx(105.0)
    assert trace.rate_at(5) == pytest.approx(155.0)
    assert trace.rate_at(15) == 200.0
    assert file_trace(path, duration=40).rate_at(35) == 200.0  # held past the last point


@pytest.mark.parametrize(
    "text", ["time,rate\n", "0,100\nten,200\n", "0,100\n5,-1\n", "5,100\n0,100\n"]
)
def test_bad_files_are_refused_with_the_path(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.csv"):
        file_trace(path)


def test_parse_trace_knows_the_names(tmp_path: Path) -> None:
    assert parse_trace("step", 90, 1).name == "step"
    assert parse_trace("diurnal", None, 1).duration == 3600
    path = tmp_path / "x.csv"
    path.write_text("0,5\n30,5\n", encoding="utf-8")
    assert parse_trace(f"file:{path}", None, 1).duration == 30
    with pytest.raises(ValueError, match="Unknown trace 'sine'"):
        parse_trace("sine", 60, 1)
