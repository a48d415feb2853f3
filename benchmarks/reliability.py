"""Reliability numbers in one sitting (minilm, default variant, 2 instances):

1. chaos: kill -9 one of the two workers every 10 s for 60 s under 32 concurrent clients;
2. overload: capacity (closed loop), then open loop at 50 % and at 3x capacity with admission
   control (``--max-queue-wait-ms``): goodput, p99 of admitted requests, refusal latency;
3. soak (``--soak S``, default 600): 70 % of capacity; memory of the gateway and workers
   at the start and the end.

    python benchmarks/reliability.py [--chaos 60] [--overload 60] [--soak 600] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).parent))
from harness import DLPROXY, Serving, run_json


def bench(url: str, *extra: str) -> dict[str, Any]:
    return run_json([*DLPROXY, "bench", url, "--model", "minilm", "--warmup", "2", *extra])


def workers(server: Serving) -> list[psutil.Process]:
    return psutil.Process(server.process.pid).children()


def chaos(seconds: float) -> dict[str, Any]:
    with Serving("--instances", "2") as server:
        kills: list[int] = []
        stop = threading.Event()

        def killer() -> None:
            time.sleep(2 + 5)  # after the warm-up, then every 10 s
            while not stop.wait(0 if not kills else 10):
                victim = random.choice(workers(server))
                os.kill(victim.pid, signal.SIGKILL)
                kills.append(victim.pid)

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        result = bench(server.url, "--concurrency", "32", "--duration", str(seconds))
        stop.set()
        thread.join()
        return {"kills": len(kills), "bench": result}


def overload(seconds: float, max_wait_ms: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with Serving("--instances", "2", "--max-queue-wait-ms", str(max_wait_ms)) as server:
        capacity = bench(server.url, "--concurrency", "32", "--duration", "15")["throughput_rps"]
        out["capacity_rps"] = capacity
        out["half"] = bench(server.url, "--rate", str(capacity * 0.5), "--duration", "20")
        out["triple"] = bench(server.url, "--rate", str(capacity * 3), "--duration", str(seconds))
    return out


def soak(seconds: float, rate: float | None) -> dict[str, Any]:
    """RSS of the gateway and workers over ``seconds`` at ``rate`` (default: 70 % of capacity,
    measured here first), sampled every 30 s: a leak grows steadily, while a one-off rise (an
    arena sized for the largest batch seen, buffers of a burst) levels off."""
    with Serving("--instances", "2") as server:
        if rate is None:
            capacity = bench(server.url, "--concurrency", "32", "--duration", "15")
            rate = 0.7 * capacity["throughput_rps"]
        bench(server.url, "--rate", str(rate), "--duration", "20")  # warm: first allocations
        processes = [psutil.Process(server.process.pid), *workers(server)]
        samples: list[list[int]] = []
        stop = threading.Event()

        def sample() -> None:
            while True:
                samples.append([p.memory_info().rss for p in processes])
                if stop.wait(30):
                    return

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            result = bench(server.url, "--rate", str(rate), "--duration", str(seconds))
        finally:
            stop.set()
            sampler.join()
        samples.append([p.memory_info().rss for p in processes])
    before, after = samples[0], samples[-1]
    growth = [(b2 - b1) / b1 for b1, b2 in zip(before, after, strict=True)]
    half = samples[len(samples) // 2]
    second_half = [(b2 - b1) / b1 for b1, b2 in zip(half, after, strict=True)]
    return {
        "rate": rate,
        "rss_before": before,
        "rss_after": after,
        "rss_samples": samples,
        "growth": growth,
        "growth_second_half": second_half,
        "bench": result,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chaos", type=float, default=60)
    parser.add_argument("--overload", type=float, default=60)
    parser.add_argument("--max-queue-wait-ms", type=float, default=100)
    parser.add_argument("--soak", type=float, default=600)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    if args.chaos:
        results["chaos"] = chaos(args.chaos)
    if args.overload:
        results["overload"] = overload(args.overload, args.max_queue_wait_ms)
    if args.soak:
        capacity = results.get("overload", {}).get("capacity_rps")
        rate = 0.7 * capacity if capacity else None
        results["soak"] = soak(args.soak, rate)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(table(results))


def table(r: dict[str, Any]) -> str:
    rows = ["| measure | value | target |", "| --- | --- | --- |"]
    if "chaos" in r:
        b = r["chaos"]["bench"]
        rows.append(
            f"| kill -9 of a worker every 10 s, 32 clients | {r['chaos']['kills']} kills, {b['requests']} requests, "
            f"{b['errors']} failed, p99 {b['latency_ms']['p99']:.0f} ms | 0 failed |"
        )
    if "overload" in r:
        o = r["overload"]
        half, triple = o["half"], o["triple"]
        refusal = triple.get("refusal_latency_ms") or {}
        rows += [
            f"| capacity (32 clients, closed loop) | {o['capacity_rps']:.0f} req/s | |",
            f"| open loop at 50 % | p99 {half['latency_ms']['p99']:.1f} ms | |",
            f"| open loop at 3x: goodput | {triple['throughput_rps']:.0f} req/s = {triple['throughput_rps'] / o['capacity_rps']:.2f} x capacity | >= 0.90 x |",
            f"| open loop at 3x: p99 of admitted | {triple['latency_ms']['p99']:.1f} ms = {triple['latency_ms']['p99'] / half['latency_ms']['p99']:.1f} x the 50 % p99 | <= 4 x |",
            f"| open loop at 3x: refusals | {sum(v for k, v in triple['errors_by_status'].items() if k in ('503', '429'))}, "
            f"p50 {refusal.get('p50') or 0:.2f} ms, p99 {refusal.get('p99') or 0:.2f} ms, max {refusal.get('max') or 0:.2f} ms | < 5 ms |",
        ]
    if "soak" in r:
        s = r["soak"]
        names = ["gateway"] + [f"worker {i + 1}" for i in range(len(s["growth"]) - 1)]
        growth = ", ".join(f"{n} {g * 100:+.1f} %" for n, g in zip(names, s["growth"], strict=True))
        late = ", ".join(
            f"{n} {g * 100:+.1f} %" for n, g in zip(names, s["growth_second_half"], strict=True)
        )
        rows.append(
            f"| soak at {s['rate']:.0f} req/s, {s['bench']['duration_s']:.0f} s: RSS growth | {growth} "
            f"(second half alone: {late}); {s['bench']['errors']} errors, p99 "
            f"{s['bench']['latency_ms']['p99']:.0f} ms | < 5 % |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    main()
