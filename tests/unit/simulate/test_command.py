from __future__ import annotations

import json
from pathlib import Path

import pytest

from dlproxy.autoscaling.base import POLICIES
from dlproxy.cli import build_parser


def run(*argv: str) -> int:
    args = build_parser().parse_args(["simulate", *argv])
    return int(args.handler(args))


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    path = tmp_path / "load.csv"
    path.write_text("time,rate\n0,50\n20,400\n40,400\n60,50\n", encoding="utf-8")
    return path


def test_all_policies_and_both_baselines_with_json_and_plot(tmp_path: Path, trace: Path) -> None:
    out, image = tmp_path / "out.json", tmp_path / "out.png"
    assert (
        run("--trace", f"file:{trace}", "--slo-ms", "50", "--json", str(out), "--plot", str(image))
        == 0
    )
    data = json.loads(out.read_text(encoding="utf-8"))
    names = [row["policy"] for row in data["rows"]]
    assert names[: len(POLICIES)] == sorted(POLICIES)
    peak, mean = data["static_peak_instances"], data["static_mean_instances"]
    assert names[len(POLICIES) :] == [f"static at peak ({peak})", f"static at mean ({mean})"]
    assert data["slo_ms"] == 50.0
    assert data["duration_s"] == 60.0
    for row in data["rows"]:
        assert row["requests"] > 10_000
        assert 0.0 <= row["violation_pct"] <= 100.0
    assert data["rows"][len(POLICIES)]["vs_static_peak"] == 1.0
    assert image.stat().st_size > 10_000


def test_one_policy_with_options(tmp_path: Path, trace: Path) -> None:
    out = tmp_path / "out.json"
    argv = [
        "--trace",
        f"file:{trace}",
        "--policy",
        "cost",
        "--option",
        "use_forecast=false",
        "--option",
        "max_utilisation=0.5",
        "--json",
        str(out),
    ]
    assert run(*argv) == 0
    rows = json.loads(out.read_text(encoding="utf-8"))["rows"]
    assert rows[0]["policy"] == "cost"


@pytest.mark.parametrize(
    "argv",
    [
        ["--trace", "sine"],
        ["--trace", "step", "--policy", "magic"],
        ["--trace", "step", "--option", "target=2"],  # options need one policy
        ["--trace", "step", "--policy", "cost", "--option", "slo"],
        ["--trace", "step", "--slo-ms", "0"],
        ["--trace", "file:/nonexistent.csv"],
    ],
)
def test_invalid_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert run(*argv) == 2
    assert "dlproxy simulate:" in capsys.readouterr().err
