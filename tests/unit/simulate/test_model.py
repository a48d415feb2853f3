from __future__ import annotations

import json
from pathlib import Path

import pytest

from dlproxy.simulate.model import ServiceProfile, default_profile, load_profile


def test_default_profile_is_the_measured_minilm_figures() -> None:
    profile = default_profile()
    assert profile.batch_time(1) == pytest.approx(0.0029)
    assert profile.throughput(32) == pytest.approx(430.0)
    # A fixed cost per batch plus a cost per item: batching helps, with diminishing returns.
    assert profile.throughput(1) < profile.throughput(8) < profile.throughput(32)


def test_sizes_between_and_beyond_the_measured_ones() -> None:
    profile = ServiceProfile(sizes=(1, 4), seconds=(0.01, 0.02))
    assert profile.batch_time(2) == pytest.approx(0.01 + 0.01 / 3)
    assert profile.batch_time(8) == pytest.approx(0.04)  # beyond: per item of the largest
    assert profile.table(4) == [
        0.0,
        0.01,
        pytest.approx(0.01333, rel=1e-3),
        pytest.approx(0.01667, rel=1e-3),
        0.02,
    ]


def test_loads_the_offline_bench_json(tmp_path: Path) -> None:
    path = tmp_path / "offline.json"
    data = {"model": "minilm:int8", "threads": 2, "throughput": {"1": 500.0, "16": 800.0}}
    path.write_text(json.dumps(data), encoding="utf-8")
    profile = load_profile(path)
    assert profile.sizes == (1, 16)
    assert profile.batch_time(1) == pytest.approx(0.002)
    assert profile.batch_time(16) == pytest.approx(0.02)
    assert "minilm:int8" in profile.source


@pytest.mark.parametrize("data", [{}, {"throughput": {}}, {"throughput": {"1": 0}}, []])
def test_a_file_without_throughputs_is_refused(tmp_path: Path, data: object) -> None:
    path = tmp_path / "offline.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError, match=r"offline\.json"):
        load_profile(path)


def test_profiles_must_be_ordered_and_positive() -> None:
    with pytest.raises(ValueError):
        ServiceProfile(sizes=(4, 1), seconds=(0.1, 0.2))
    with pytest.raises(ValueError):
        ServiceProfile(sizes=(1,), seconds=(0.0,))
