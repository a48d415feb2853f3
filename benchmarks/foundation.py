"""Foundation numbers in one sitting: the model alone, then served minilm at 1, 32 and 128 clients,
then echo at 32 clients; prints a markdown table of the ratios the issue asks for.

    python benchmarks/foundation.py [--duration 15] [--json results.json]

Every server is started here on a free port and stopped by its PID; load goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from harness import DLPROXY, Serving, bench, run_json


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--variant", default="int8")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    reference = f"minilm:{args.variant}"
    results: dict[str, Any] = {}
    results["offline_2t"] = run_json([*DLPROXY, "bench", "--offline", reference, "--threads", "2"])
    results["offline_1t"] = run_json([*DLPROXY, "bench", "--offline", reference, "--threads", "1"])
    with Serving("--model", reference) as server:
        for clients in (1, 32, 128):
            results[f"minilm_c{clients}"] = bench(server.url, "minilm", clients, args.duration)
        results["minilm_openai_c32"] = bench(server.url, "minilm", 32, args.duration, "openai")
    with Serving("--model", "echo", "--instances", "1") as server:
        results["echo_c32"] = bench(server.url, "echo", 32, args.duration)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(table(results))


def table(r: dict[str, Any]) -> str:
    limit = max(r["offline_2t"]["best_throughput"], r["offline_1t"]["best_throughput"])
    b1 = {t: r[f"offline_{t}t"]["latency_p50_ms"] for t in (1, 2)}
    rows = [
        "| measure | value | target |",
        "| --- | --- | --- |",
        f"| model alone, best batch (1 / 2 threads) | {r['offline_1t']['best_throughput']:.0f} / {r['offline_2t']['best_throughput']:.0f} items/s | |",
        f"| model alone, batch-1 p50 (1 / 2 threads) | {b1[1]:.2f} / {b1[2]:.2f} ms | |",
    ]
    for clients, target in ((32, 0.85), (128, 0.92)):
        s = r[f"minilm_c{clients}"]
        rows.append(
            f"| minilm, {clients} clients | {s['throughput_rps']:.0f} req/s = {s['throughput_rps'] / limit:.2f} x limit, "
            f"p50 {s['latency_ms']['p50']:.1f} ms, p99 {s['latency_ms']['p99']:.1f} ms, errors {s['errors']} | >= {target} x"
            + (", p99 <= 80 ms |" if clients == 32 else " |")
        )
    s = r["minilm_openai_c32"]
    rows.append(
        f"| minilm, 32 clients, OpenAI protocol | {s['throughput_rps']:.0f} req/s, p99 {s['latency_ms']['p99']:.1f} ms | |"
    )
    s = r["minilm_c1"]
    rows.append(
        f"| minilm, 1 client | p50 {s['latency_ms']['p50']:.2f} ms = {s['latency_ms']['p50'] / b1[1]:.2f} x 1-thread batch-1 "
        f"({s['latency_ms']['p50'] / b1[2]:.2f} x 2-thread) | <= 1.3 x |"
    )
    s = r["echo_c32"]
    rows.append(
        f"| echo, 32 clients | {s['throughput_rps']:.0f} req/s, p99 {s['latency_ms']['p99']:.1f} ms | >= 8,000 |"
    )
    return "\n".join(rows)


if __name__ == "__main__":
    main()
