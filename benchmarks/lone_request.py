"""Where a lone request's time goes (#17 item 2): minilm with the defaults, one client closed
loop, then the gateway's own stage means from ``/metrics`` (queue wait, batch sent to reply,
total); and in process, minilm int8 on fresh sentences, batch 1, back to back and with idle gaps
as a lone request has them: the instance's 1-thread session and the borrowed 2-thread session
(not spinning, as served).

    python benchmarks/lone_request.py [--duration 8] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).parent))
from harness import DLPROXY, Serving, run_json

from dlproxy.models.builtin.corpus import sentences
from dlproxy.models.builtin.minilm import MiniLM


def stage_means(url: str) -> dict[str, float]:
    """Mean ms per stage of ``dlproxy_request_duration_seconds``."""
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    text = httpx.get(f"{url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        if family.name != "dlproxy_request_duration_seconds":
            continue
        for sample in family.samples:
            stage = sample.labels.get("stage", "")
            if sample.name.endswith("_sum"):
                sums[stage] = sums.get(stage, 0.0) + sample.value
            elif sample.name.endswith("_count"):
                counts[stage] = counts.get(stage, 0.0) + sample.value
    return {s: round(sums[s] / counts[s] * 1000, 2) for s in sums if counts.get(s)}


def in_process(gaps: tuple[float, ...], runs: int = 300) -> dict[str, dict[str, float]]:
    """p50 ms of one fresh sentence per ``predict``, after each idle gap (s)."""
    corpus = sentences()
    model = MiniLM("int8", threads=1)
    model.load()
    model.borrow_threads(2)
    results: dict[str, dict[str, float]] = {}
    for borrowing in (False, True):
        model.borrowing = borrowing
        label = "borrowed 2 threads" if borrowing else "own 1 thread"
        results[label] = {}
        for gap in gaps:
            latencies = []
            for i in range(runs):
                text = np.empty(1, dtype=object)
                text[0] = f"{i} {corpus[i % len(corpus)]}".encode()
                started = time.perf_counter()
                model.predict({"text": text}, {})
                latencies.append(time.perf_counter() - started)
                time.sleep(gap)
            results[label][f"gap {gap * 1000:.0f} ms"] = round(
                statistics.median(latencies[50:]) * 1000, 2
            )
    model.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=8)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with Serving() as server:
        common = ["bench", server.url, "--model", "minilm", "--warmup", "2"]
        served = run_json(
            [*DLPROXY, *common, "--concurrency", "1", "--duration", str(args.duration)]
        )
        stages = stage_means(server.url)
    local = in_process((0.0, 0.001, 0.002))
    report: dict[str, Any] = {
        "client_p50_ms": served["latency_ms"]["p50"],
        "gateway_stage_means_ms": stages,
        "in_process_p50_ms": local,
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
