"""Many models under a memory budget: 4 models behind one server, a budget that holds 2, Zipf
popularity.

    python benchmarks/multiplexing.py [--clients 8] [--duration 60] [--zipf 1.0] [--json OUT]

The models (a repository of 4, as two tenants' models would be): minilm int8 twice and fp32
twice under four names, one fresh sentence per request. Models of about one size make "a budget
that holds 2" exact (digits, at a third of minilm int8's memory, would let three small ones fit).
First every model is loaded alone, without a budget, to measure its workers (resident memory);
the budget is then the two largest plus 5%, which holds any two and never three. Then the budgeted
server takes ``--clients`` closed-loop clients for ``--duration`` s, each request for model k with
probability proportional to 1 / k ** zipf.

Reported: requests and failed ones (target 0); the hit rate (requests that found their model
loaded); the requests that waited for a load (``X-Dlproxy-Load-Wait-Ms``) and their latency p50 /
p99 against the others'; loads and evictions; and the memory of the server's worker processes
sampled every 50 ms with psutil (not the workers' own reports), its peak against the budget plus
the largest model (target: never above).

Every server is started here on a free port and stopped by its PID; load goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).parent))
from harness import Serving

from dlproxy.models.builtin.corpus import sentences

MODELS = {  # repository name -> reference, most popular first (two tenants' int8 and fp32)
    "alpha-int8": "minilm:int8",
    "beta-fp32": "minilm:fp32",
    "gamma-int8": "minilm:int8",
    "delta-fp32": "minilm:fp32",
}
MiB = 1024 * 1024


def repository(root: Path) -> Path:
    for name, reference in MODELS.items():
        folder = root / name / "1"
        folder.mkdir(parents=True)
        (folder / "model.json").write_text(json.dumps({"model": reference}))
    return root


def body(n: int, texts: list[str]) -> dict[str, Any]:
    text = f"{texts[n % len(texts)]} ({n})"  # fresh: no cache, no coalescing
    return {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}]}


def worker_bytes(server_pid: int) -> int:
    """Resident memory of every process the server started (its workers)."""
    total = 0
    try:
        for child in psutil.Process(server_pid).children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.NoSuchProcess:
                pass
    except psutil.NoSuchProcess:
        pass
    return total


def sizes(root: Path) -> dict[str, int]:
    """Each model's workers' memory, each loaded alone (no budget: explicit loads)."""
    import urllib.request

    measured = {}
    with Serving(
        "--model-repository", str(root), "--model-control", "explicit", "--instances", "1",
        "--threads", "1",
    ) as server:
        for name in MODELS:
            request = urllib.request.Request(
                f"{server.url}/v2/repository/models/{name}/load", method="POST"
            )
            urllib.request.urlopen(request, timeout=600).read()
            time.sleep(1.0)  # let a heartbeat carry the settled figure
            measured[name] = worker_bytes(server.process.pid)
            request = urllib.request.Request(
                f"{server.url}/v2/repository/models/{name}/unload", method="POST"
            )
            urllib.request.urlopen(request, timeout=600).read()
            time.sleep(1.0)
    return measured


async def traffic(url: str, pid: int, clients: int, duration: float, zipf: float) -> dict[str, Any]:
    texts = sentences()
    names = list(MODELS)
    weights = [1 / (k + 1) ** zipf for k in range(len(names))]
    rows: list[tuple[str, float, int, float]] = []  # (model, latency, status, load wait ms)
    memory: list[int] = []
    stop = asyncio.Event()

    async def client(index: int, http: aiohttp.ClientSession) -> None:
        draw = random.Random(index)
        n = index
        while not stop.is_set():
            model = draw.choices(names, weights)[0]
            n += clients
            began = time.perf_counter()
            wait = 0.0
            try:
                async with http.post(
                    f"{url}/v2/models/{model}/infer", json=body(n, texts)
                ) as answer:
                    await answer.read()
                    status = answer.status
                    wait = float(answer.headers.get("x-dlproxy-load-wait-ms", 0))
            except aiohttp.ClientError:
                status = 0
            rows.append((model, time.perf_counter() - began, status, wait))

    async def sampler() -> None:
        while not stop.is_set():
            memory.append(await asyncio.to_thread(worker_bytes, pid))
            await asyncio.sleep(0.05)

    async def timer() -> None:
        await asyncio.sleep(duration)
        stop.set()

    connector = aiohttp.TCPConnector(limit=clients + 4)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        await asyncio.gather(timer(), sampler(), *(client(i, http) for i in range(clients)))
        async with http.get(f"{url}/stats") as answer:
            lifecycle = (await answer.json())["lifecycle"]
    waited = [r for r in rows if r[3] > 0]
    others = [r for r in rows if r[3] == 0 and r[2] == 200]

    def percentile(values: list[float], q: float) -> float:
        return float(np.percentile(values, q) * 1000) if values else float("nan")

    events = lifecycle["events"]
    return {
        "requests": len(rows),
        "failed": sum(1 for r in rows if r[2] != 200),
        "by_model": {m: sum(1 for r in rows if r[0] == m) for m in names},
        "hit_rate": 1 - len(waited) / max(1, len(rows)),
        "waited": len(waited),
        "waited_p50_ms": percentile([r[1] for r in waited], 50),
        "waited_p99_ms": percentile([r[1] for r in waited], 99),
        "others_p50_ms": percentile([r[1] for r in others], 50),
        "others_p99_ms": percentile([r[1] for r in others], 99),
        "loads": sum(n for k, n in events.items() if k.split("/")[1] == "load"),
        "evictions": sum(n for k, n in events.items() if k.endswith("/unload/evicted")),
        "memory_peak": max(memory, default=0),
        "memory_samples": len(memory),
        "rps": len(rows) / duration,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--zipf", type=float, default=1.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = repository(Path(tmp))
        measured = sizes(root)
        largest = sorted(measured.values(), reverse=True)
        budget = int((largest[0] + largest[1]) * 1.05)
        assert budget < sum(sorted(measured.values())[:3]), "the budget would hold three"
        with Serving(
            "--model-repository", str(root), "--memory-budget", str(budget),
            "--instances", "1", "--threads", "1",
        ) as server:
            result = asyncio.run(
                traffic(server.url, server.process.pid, args.clients, args.duration, args.zipf)
            )
    result.update(sizes_mib={k: v / MiB for k, v in measured.items()}, budget=budget)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    ceiling = budget + largest[0]
    print("| measure | value | target |")
    print("| --- | --- | --- |")
    sized = ", ".join(f"{k} {v / MiB:.0f}" for k, v in measured.items())
    print(f"| model sizes (workers' RSS, MiB) | {sized} | |")
    print(f"| budget | {budget / MiB:.0f} MiB (the two largest + 5%) | holds 2 of 4 |")
    share = ", ".join(f"{k} {v}" for k, v in result["by_model"].items())
    print(f"| requests by model (Zipf {args.zipf}) | {share} | |")
    print(f"| failed requests | {result['failed']} of {result['requests']} | 0 |")
    print(f"| hit rate (model already loaded) | {result['hit_rate']:.1%} | report |")
    print(
        f"| requests that waited for a load: count, p50 / p99 | {result['waited']}, "
        f"{result['waited_p50_ms']:.0f} / {result['waited_p99_ms']:.0f} ms | report |"
    )
    print(
        f"| other requests p50 / p99 | {result['others_p50_ms']:.0f} / "
        f"{result['others_p99_ms']:.0f} ms | |"
    )
    print(f"| loads, evictions | {result['loads']}, {result['evictions']} | |")
    print(
        f"| peak worker memory ({result['memory_samples']} samples) | "
        f"{result['memory_peak'] / MiB:.0f} MiB vs budget + largest {ceiling / MiB:.0f} MiB | "
        "never above |"
    )
    print(f"| throughput | {result['rps']:.0f} req/s | |")


if __name__ == "__main__":
    main()
