"""Model lifecycle figures in one sitting: cold start of a repository, and versions swapped under load.

    python benchmarks/model_lifecycle.py [--clients 32] [--swaps 5] [--gap 6] [--json OUT]

1. Cold start: ``dlproxy serve --model-repository`` of 3 models (minilm int8 and fp32, digits),
   time from the process start to ``/v2/health/ready``.
2. Update under load: a repository with minilm (int8) as version 1; ``--clients`` closed-loop
   clients send one fresh sentence each, back to back, while every ``--gap`` s a new version
   folder is written and ``POST /v2/repository/models/embed/load`` swaps to it (version policy
   latest 1: the old version is drained and stopped), ``--swaps`` times. Reported: failed
   requests (target 0), the load call's duration (the new version's cold start), p99 during the
   swap windows (load call start to 1 s after it returned) against the steady p99 outside them
   (target <= 2x), and throughput in and out of the windows.

Every server is started here on a free port and stopped by its PID; load goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from harness import Serving

from dlproxy.models.builtin.corpus import sentences


def version(root: Path, name: str, number: int, model: str) -> None:
    folder = root / name / str(number)
    folder.mkdir(parents=True)
    (folder / "model.json").write_text(json.dumps({"model": model}))


def cold_start() -> float:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        version(root, "embed", 1, "minilm:int8")
        version(root, "embed-fp32", 1, "minilm:fp32")
        version(root, "digits", 1, "digits")
        started = time.perf_counter()
        with Serving("--model-repository", str(root), "--instances", "1", "--threads", "1"):
            return time.perf_counter() - started


async def under_load(url: str, root: Path, clients: int, swaps: int, gap: float) -> dict[str, Any]:
    texts = sentences()
    samples: list[tuple[float, float, int]] = []  # (start, latency, status)
    windows: list[tuple[float, float]] = []
    loads: list[float] = []
    stop = asyncio.Event()

    async def client(index: int, http: aiohttp.ClientSession) -> None:
        n = index
        while not stop.is_set():
            text = f"{texts[n % len(texts)]} ({n})"  # fresh: no cache, no coalescing
            n += clients
            body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}]}
            began = time.perf_counter()
            try:
                async with http.post(f"{url}/v2/models/embed/infer", json=body) as answer:
                    await answer.read()
                    status = answer.status
            except aiohttp.ClientError:
                status = 0
            samples.append((began, time.perf_counter() - began, status))

    async def swapper(http: aiohttp.ClientSession) -> None:
        for number in range(2, swaps + 2):
            await asyncio.sleep(gap)
            version(root, "embed", number, "minilm:int8")
            began = time.perf_counter()
            async with http.post(f"{url}/v2/repository/models/embed/load") as answer:
                text = await answer.text()
            ended = time.perf_counter()
            if answer.status != 200:
                raise RuntimeError(f"load failed: {answer.status} {text}")
            loads.append(ended - began)
            windows.append((began, ended + 1.0))
        await asyncio.sleep(gap)
        stop.set()

    connector = aiohttp.TCPConnector(limit=clients + 4)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        await asyncio.gather(swapper(http), *(client(i, http) for i in range(clients)))
    warm = samples[0][0] + 2.0  # the first seconds warm the connections
    measured = [s for s in samples if s[0] >= warm]
    inside = [s for s in measured if any(a <= s[0] <= b for a, b in windows)]
    outside = [s for s in measured if not any(a <= s[0] <= b for a, b in windows)]
    span_in = sum(b - a for a, b in windows)
    span_out = (measured[-1][0] - measured[0][0]) - span_in

    def p99(rows: list[tuple[float, float, int]]) -> float:
        return float(np.percentile([r[1] for r in rows], 99) * 1000) if rows else float("nan")

    return {
        "requests": len(samples),
        "failed": sum(1 for s in samples if s[2] != 200),
        "load_seconds": loads,
        "p99_steady_ms": p99(outside),
        "p99_swap_ms": p99(inside),
        "rps_steady": len(outside) / max(span_out, 1e-9),
        "rps_swap": len(inside) / max(span_in, 1e-9),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--swaps", type=int, default=5)
    parser.add_argument("--gap", type=float, default=6.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict[str, Any] = {"cold_start_3_models_s": cold_start()}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        version(root, "embed", 1, "minilm:int8")
        with Serving(
            "--model-repository", str(root), "--instances", "1", "--threads", "1"
        ) as server:
            results["swap"] = asyncio.run(
                under_load(server.url, root, args.clients, args.swaps, args.gap)
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    swap = results["swap"]
    print("| measure | value | target |")
    print("| --- | --- | --- |")
    print(f"| cold start, repository of 3 models | {results['cold_start_3_models_s']:.1f} s | |")
    loads = ", ".join(f"{s:.1f}" for s in swap["load_seconds"])
    print(
        f"| load call (new version ready, traffic moved), {len(swap['load_seconds'])} swaps | {loads} s | |"
    )
    print(f"| failed requests | {swap['failed']} of {swap['requests']} | 0 |")
    ratio = swap["p99_swap_ms"] / swap["p99_steady_ms"]
    print(
        f"| p99 during swaps vs steady | {swap['p99_swap_ms']:.0f} vs {swap['p99_steady_ms']:.0f} ms"
        f" = {ratio:.2f}x | <= 2x |"
    )
    print(
        f"| throughput during swaps vs steady | {swap['rps_swap']:.0f} vs {swap['rps_steady']:.0f} req/s | |"
    )


if __name__ == "__main__":
    main()
