"""Fair shares under a flood (#17 item 4): minilm with the defaults and four API keys. Two good
clients send fresh sentences in open loop (``--good-rate`` each, 25/s), first alone (quiet), then
while a third client floods the server back to back over ``--flood`` connections (64: far more
than its share); the same with ``--urgent-max-batch 0`` (the flood's batches not kept short)
and with ``--no-fair-share`` (first come, first served, as before). The
fourth key is unused. Reported: the good clients' p50 / p99 (the worse of the two) against the
quiet figure, their refusals, and the flood's throughput and refusals.

    python benchmarks/fairness.py [--flood 64] [--good-rate 25] [--duration 15] [--json OUT]
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

KEYS = ("good-key-one", "good-key-two", "flood-key", "spare-key")


def bench(url: str, key: str, *extra: str) -> dict[str, Any]:
    auth = f"Authorization:Bearer {key}"
    return run_json(
        [*DLPROXY, "bench", url, "--model", "minilm", "--warmup", "2", "--header", auth, *extra]
    )


def good_clients(url: str, rate: float, duration: float) -> list[dict[str, Any]]:
    """The two good clients at once, each at ``rate``."""
    results: list[dict[str, Any]] = [{}, {}]
    threads = [
        threading.Thread(
            target=lambda i=i: results[i].update(
                bench(url, KEYS[i], "--rate", str(rate), "--duration", str(duration))
            )
        )
        for i in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def under_flood(url: str, clients: int, rate: float, duration: float) -> dict[str, Any]:
    flood: dict[str, Any] = {}
    thread = threading.Thread(
        target=lambda: flood.update(
            bench(url, KEYS[2], "--concurrency", str(clients), "--duration", str(duration + 6))
        )
    )
    thread.start()
    try:
        threading.Event().wait(3)  # the flood saturates the server first
        good = good_clients(url, rate, duration)
    finally:
        thread.join()
    return {"good": good, "flood": flood}


def worst(good: list[dict[str, Any]], key: str) -> float:
    return max(float(g["latency_ms"][key]) for g in good)


def refused(result: dict[str, Any]) -> int:
    return int(result["requests"] - result["ok"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flood", type=int, default=64)
    parser.add_argument("--good-rate", type=float, default=25)
    parser.add_argument("--duration", type=float, default=15)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    keys = [arg for key in KEYS for arg in ("--api-key", key)]
    results: dict[str, Any] = {}
    setups = (
        ("fair shares", []),
        ("fair shares, no urgent cap", ["--urgent-max-batch", "0"]),
        ("first come, first served", ["--no-fair-share"]),
    )
    for label, extra in setups:
        with Serving(*keys, *extra) as server:
            quiet = good_clients(server.url, args.good_rate, args.duration)
            results[label] = {
                "quiet": quiet,
                **under_flood(server.url, args.flood, args.good_rate, args.duration),
            }
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(
        "| setup | good p50 / p99, quiet | good p50 / p99, flood | p99 / quiet | good refused "
        "| flood req/s | flood refused |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for label, r in results.items():
        q, g, f = r["quiet"], r["good"], r["flood"]
        print(
            f"| {label} | {worst(q, 'p50'):.1f} / {worst(q, 'p99'):.1f} ms "
            f"| {worst(g, 'p50'):.1f} / {worst(g, 'p99'):.1f} ms "
            f"| {worst(g, 'p99') / worst(q, 'p99'):.1f} | {sum(refused(x) for x in g)} "
            f"| {f.get('throughput_rps', 0):.0f} | {refused(f) if f else '-'} |"
        )


if __name__ == "__main__":
    main()
