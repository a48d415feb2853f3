"""Priorities under a flood (#17 item 3): minilm with the defaults; a probe of fresh sentences
in open loop (``--probe-rate``, 20/s) with ``X-Priority: 9``, first alone (quiet), then while
``--flood`` clients (64) send back to back at the default priority, saturating the server; and
the same probe without a priority (first come, first served, as before priorities) in the same
flood. Reported: the probe's p50 / p99 in each, and the flood's throughput.

    python benchmarks/priorities.py [--flood 64] [--probe-rate 20] [--duration 20] \\
        [--serve-args '--urgent-max-batch 0'] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from harness import DLPROXY, Serving, run_json


def bench(url: str, *extra: str) -> dict[str, Any]:
    return run_json([*DLPROXY, "bench", url, "--model", "minilm", "--warmup", "2", *extra])


def under_flood(url: str, clients: int, duration: float, probe: list[str]) -> dict[str, Any]:
    """The probe's figures while ``clients`` flood the server (started first, ended after)."""
    flood: dict[str, Any] = {}
    thread = threading.Thread(
        target=lambda: flood.update(
            bench(url, "--concurrency", str(clients), "--duration", str(duration + 6))
        )
    )
    thread.start()
    try:
        measured = bench(url, *probe, "--duration", str(duration), "--warmup", "4")
    finally:
        thread.join()
    return {"probe": measured, "flood": flood}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flood", type=int, default=64)
    parser.add_argument("--probe-rate", type=float, default=20)
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--serve-args", default="", help="more dlproxy serve arguments")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    probe = ["--rate", str(args.probe_rate)]
    high = [*probe, "--header", "X-Priority:9"]
    with Serving(*args.serve_args.split()) as server:
        quiet = bench(server.url, *high, "--duration", str(args.duration))
        prioritized = under_flood(server.url, args.flood, args.duration, high)
        fifo = under_flood(server.url, args.flood, args.duration, probe)
    results = {"quiet": quiet, "priority_9": prioritized, "no_priority": fifo}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    q = quiet["latency_ms"]
    print("| probe (20/s, fresh sentences) | p50 | p99 | p99 / quiet | flood throughput |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| quiet, priority 9 | {q['p50']:.1f} ms | {q['p99']:.1f} ms | 1.0 | |")
    for label, run in (("flood, priority 9", prioritized), ("flood, no priority", fifo)):
        p = run["probe"]["latency_ms"]
        print(
            f"| {label} | {p['p50']:.1f} ms | {p['p99']:.1f} ms | {p['p99'] / q['p99']:.1f} | "
            f"{run['flood'].get('throughput_rps', 0):.0f} req/s |"
        )


if __name__ == "__main__":
    main()
