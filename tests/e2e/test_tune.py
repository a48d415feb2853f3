"""``dlproxy tune`` end to end: a tiny sweep over ``echo``, then a server from the file it wrote."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from dlproxy.settings import Settings, load_config_file
from serving import Server

pytestmark = pytest.mark.slow


def test_a_sweep_recommends_a_config_that_serve_accepts(tmp_path: Path) -> None:
    out, results = tmp_path / "tuned.toml", tmp_path / "tune.json"
    finished = subprocess.run(
        [
            *(sys.executable, "-m", "dlproxy", "tune", "--model", "echo", "--slo-ms", "2000"),
            *("--instances", "1,2", "--max-batch", "8", "--max-delay-ms", "1"),
            *("--concurrency", "4", "--duration", "1", "--warmup", "0.5"),
            *("--out", str(out), "--json", str(results)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert finished.returncode == 0, finished.stderr
    assert "recommended" in finished.stdout
    data = json.loads(results.read_text())
    assert [(t["instances"], t["max_batch"]) for t in data["trials"]] == [(1, 8), (2, 8)]
    assert all(t["requests"] > 0 and t["errors"] == 0 and t["meets_slo"] for t in data["trials"])
    best = data["recommended"]
    assert best["throughput_rps"] == max(t["throughput_rps"] for t in data["trials"])
    assert data["config"] == str(out)

    settings = Settings(**load_config_file(out))
    assert (settings.models, settings.instances, settings.max_batch) == (
        ["echo"],
        best["instances"],
        8,
    )
    server = Server(
        "--admin-loopback", "--config", str(out), log=tmp_path / "server.log"
    ).wait_ready()
    try:
        rows = httpx.get(f"{server.url}/admin/instances").json()
        assert len(rows) == best["instances"]
    finally:
        assert server.stop() == 0


def test_no_configuration_meeting_the_slo_means_no_file_and_status_1(tmp_path: Path) -> None:
    out = tmp_path / "tuned.toml"
    finished = subprocess.run(
        [
            *(sys.executable, "-m", "dlproxy", "tune", "--model", "echo", "--slo-ms", "0.001"),
            *("--instances", "1", "--max-batch", "4", "--max-delay-ms", "1"),
            *("--concurrency", "2", "--duration", "0.5", "--warmup", "0"),
            *("--out", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert finished.returncode == 1, finished.stderr
    assert "no configuration met" in finished.stderr
    assert not out.exists()
