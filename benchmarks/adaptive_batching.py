"""Adaptive (AIMD) batching against fixed batch limits at low, medium and high load, in one sitting.

    PYTHONPATH=src .venv/bin/python benchmarks/adaptive_batching.py [--slo-ms 50] [--duration 15]
        [--json adaptive_batching.json]

1. Capacity: a short closed-loop run (32 clients) against fixed max batch 32, the setting with the
   most throughput on this machine.
2. For each setting (fixed max batch 1, 8, 32; adaptive with cap 32 and the SLO), one server
   (minilm int8, 2 instances x 1 thread) loaded open loop (Poisson arrivals) at 20%, 50% and 85% of
   that capacity in turn, each with a warm-up that is not counted.
3. A markdown table of throughput, p99 and mean batch size per (setting, load), whether each meets
   the SLO (p99 <= SLO, no errors, no client drops), and per load the verdict the issue asks for:
   adaptive meets the SLO with throughput >= the best fixed setting that meets it.

Every server is started here on a free port and stopped by its PID; load goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from dlproxy.bench import loadgen
from dlproxy.bench.inputs import UniqueInputs
from dlproxy.bench.report import Report

LOADS = {"low": 0.2, "medium": 0.5, "high": 0.85}
FIXED = (1, 8, 32)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:
        data: dict[str, Any] = json.loads(response.read())
    return data


class Serving:
    """``dlproxy serve`` in a subprocess, ready on enter, stopped by its PID on exit."""

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "dlproxy", "serve", "--port", str(self.port)]
        self.process = subprocess.Popen([*command, "--log-level", "warning", *args])

    def __enter__(self) -> Serving:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dlproxy serve exited with code {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=1) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        self.__exit__()
        raise TimeoutError("server did not become ready")

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            self.process.wait(60)

    def batches(self) -> tuple[int, int]:
        """(batches, items) the instances have computed so far."""
        model = get_json(f"{self.url}/stats")["models"]["minilm"]
        return int(model["batches"]), int(model["items"])


def load(
    url: str,
    duration: float,
    warmup: float,
    seed: int,
    rate: float | None = None,
    concurrency: int = 32,
) -> dict[str, Any]:
    spec = loadgen.LoadSpec(
        url=url,
        model="minilm",
        concurrency=concurrency,
        rate=rate,
        duration=duration,
        warmup=warmup,
        seed=seed,
    )
    with asyncio.Runner(loop_factory=loadgen.event_loop_factory()) as runner:
        recording = runner.run(loadgen.run_load(spec, UniqueInputs(seed)))
    return Report(recording).to_dict()


def serve_args(reference: str, setting: str, slo_ms: float) -> list[str]:
    common = ["--model", reference, "--instances", "2", "--threads", "1"]
    if setting == "adaptive":
        return [*common, "--max-batch", "32", "--batching", "adaptive", "--slo-ms", str(slo_ms)]
    return [*common, "--max-batch", setting.removeprefix("fixed ")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", default="int8")
    parser.add_argument("--slo-ms", type=float, default=50.0)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--capacity-duration", type=float, default=8.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    reference = f"minilm:{args.variant}"
    settings = [f"fixed {b}" for b in FIXED] + ["adaptive"]
    with Serving(*serve_args(reference, "fixed 32", args.slo_ms)) as server:
        capacity = load(server.url, args.capacity_duration, args.warmup, seed=1)
    peak = capacity["throughput_rps"]
    print(f"capacity (32 clients, fixed 32): {peak:.0f} req/s", file=sys.stderr)
    results: dict[str, Any] = {"slo_ms": args.slo_ms, "capacity": capacity, "runs": {}}
    for setting in settings:
        with Serving(*serve_args(reference, setting, args.slo_ms)) as server:
            for seed, (name, share) in enumerate(LOADS.items(), start=10):
                before = server.batches()
                report = load(server.url, args.duration, args.warmup, seed, rate=share * peak)
                after = server.batches()
                batches, items = after[0] - before[0], after[1] - before[1]
                report["batch_size_mean"] = items / batches if batches else 0.0
                results["runs"][f"{setting}/{name}"] = report
                p99 = report["latency_ms"]["p99"]
                print(
                    f"{setting:>9} {name:>6}: {report['throughput_rps']:.0f} req/s, p99 {p99} ms",
                    file=sys.stderr,
                )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(table(results, settings, args.slo_ms))


def meets(run: dict[str, Any], slo_ms: float) -> bool:
    p99 = run["latency_ms"]["p99"]
    return bool(run["errors"] == 0 and run["dropped"] == 0 and p99 is not None and p99 <= slo_ms)


def table(results: dict[str, Any], settings: list[str], slo_ms: float) -> str:
    peak = results["capacity"]["throughput_rps"]
    runs = results["runs"]
    header = " | ".join(
        f"{name} ({share:.0%}: {share * peak:.0f} req/s)" for name, share in LOADS.items()
    )
    rows = [
        f"| setting | {header} |",
        "| --- |" + " ---: |" * len(LOADS),
    ]
    for setting in settings:
        cells = []
        for name in LOADS:
            run = runs[f"{setting}/{name}"]
            mark = "meets" if meets(run, slo_ms) else "**misses**"
            cells.append(
                f"{run['throughput_rps']:.0f} req/s, p99 {run['latency_ms']['p99']:.1f} ms, "
                f"batch {run['batch_size_mean']:.1f}, {mark}"
            )
        rows.append(f"| {setting} | " + " | ".join(cells) + " |")
    verdicts = []
    for name in LOADS:
        adaptive = runs[f"adaptive/{name}"]
        fixed_ok = [s for s in settings[:-1] if meets(runs[f"{s}/{name}"], slo_ms)]
        best = max(fixed_ok, key=lambda s: runs[f"{s}/{name}"]["throughput_rps"], default=None)
        best_rps = runs[f"{best}/{name}"]["throughput_rps"] if best else 0.0
        ok = meets(adaptive, slo_ms) and adaptive["throughput_rps"] >= best_rps
        verdicts.append(
            f"{'met' if ok else '**not met**'} (best fixed meeting the SLO: "
            f"{best or 'none'}{f', {best_rps:.0f} req/s' if best else ''})"
        )
    rows.append("| adaptive >= best fixed within SLO | " + " | ".join(verdicts) + " |")
    return (
        f"Capacity (closed loop, 32 clients, fixed 32): {peak:.0f} req/s; SLO p99 <= {slo_ms:g} ms."
        "\n\n" + "\n".join(rows)
    )


if __name__ == "__main__":
    main()
