"""Where the time goes under contention (#17 item 1): minilm with the defaults, ``dlproxy bench``
closed loop at N clients, and meanwhile py-spy samples the gateway. Reported: throughput and
latency; the batch sizes actually formed; queue wait against worker time per request (from
/metrics); CPU seconds per request of the gateway and of the workers; the gateway's hottest
functions (self time, from py-spy's samples).

    python benchmarks/contention_profile.py [--clients 128] [--duration 15] [--json OUT]

py-spy is not a dependency of dlproxy: ``pip install py-spy`` (0.4.3 here) first.
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).parent))
from harness import DLPROXY, Serving, run_json


def bench(url: str, *extra: str) -> dict[str, Any]:
    return run_json([*DLPROXY, "bench", url, "--model", "minilm", *extra])


def histograms(url: str) -> dict[str, dict[str, float]]:
    """Sum and count of the request-stage and batch-size histograms, by family and stage."""
    out: dict[str, dict[str, float]] = collections.defaultdict(dict)
    text = httpx.get(f"{url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        if family.name not in ("dlproxy_request_duration_seconds", "dlproxy_batch_size"):
            continue
        for sample in family.samples:
            if sample.name.endswith(("_sum", "_count")):
                stage = sample.labels.get("stage", "batch")
                key = f"{stage}_{sample.name.rsplit('_', 1)[1]}"
                out[family.name][key] = out[family.name].get(key, 0.0) + sample.value
    return out


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def hottest(raw: str, top: int = 15) -> list[tuple[str, float]]:
    """Leaf frames by share of samples (py-spy's ``--format raw``: 'frame;frame;... count')."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        leaf = stack.split(";")[-1]
        counts[leaf] += int(count)
        total += int(count)
    return [(frame, n / max(1, total)) for frame, n in counts.most_common(top)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=128)
    parser.add_argument("--duration", type=float, default=15)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with Serving() as server:
        gateway = psutil.Process(server.process.pid)
        workers = gateway.children()
        bench(server.url, "--concurrency", "8", "--duration", "3", "--warmup", "1")  # warm
        before = histograms(server.url)
        cpu_before = [cpu_seconds(p) for p in (gateway, *workers)]
        with tempfile.TemporaryDirectory() as folder:
            raw = Path(folder) / "gateway.txt"
            spy = subprocess.Popen(
                [
                    "py-spy",
                    "record",
                    "--pid",
                    str(gateway.pid),
                    "--format",
                    "raw",
                    "--rate",
                    "200",
                    "--duration",
                    str(int(args.duration * 0.8)),
                    "--output",
                    str(raw),
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            result = bench(  # py-spy samples the gateway meanwhile
                server.url,
                *("--concurrency", str(args.clients), "--duration", str(args.duration)),
                *("--warmup", "0"),
            )
            spy.wait(timeout=60)
            frames = hottest(raw.read_text()) if raw.exists() else []
        cpu_after = [cpu_seconds(p) for p in (gateway, *workers)]
        after = histograms(server.url)
    requests = result["requests"]
    stages = {
        key: after["dlproxy_request_duration_seconds"].get(key, 0.0)
        - before["dlproxy_request_duration_seconds"].get(key, 0.0)
        for key in after["dlproxy_request_duration_seconds"]
    }
    batches = {
        key: after["dlproxy_batch_size"][key] - before["dlproxy_batch_size"].get(key, 0.0)
        for key in after["dlproxy_batch_size"]
    }
    used = [b - a for a, b in zip(cpu_before, cpu_after, strict=True)]
    report = {
        "clients": args.clients,
        "throughput_rps": result["throughput_rps"],
        "latency_ms": result["latency_ms"],
        "mean_batch_size": batches.get("batch_sum", 0) / max(1, batches.get("batch_count", 0)),
        "batches": batches.get("batch_count", 0),
        "ms_per_request": {
            stage.removesuffix("_sum"): 1000 * value / max(1, stages.get(stage[:-4] + "_count", 1))
            for stage, value in stages.items()
            if stage.endswith("_sum")
        },
        "cpu_ms_per_request": {
            "gateway": 1000 * used[0] / max(1, requests),
            "workers": 1000 * sum(used[1:]) / max(1, requests),
        },
        "gateway_hottest": frames,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
