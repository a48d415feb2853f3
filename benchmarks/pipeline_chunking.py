"""Cheaper models: model-parallel pipeline (K=1 vs K=2) and chunked inference of a long text.

    python benchmarks/pipeline_chunking.py [--duration 10] [--json results.json]

Pipeline: ``minilm:torch`` served three ways on the same cores, each measured with
``dlproxy bench`` at 32 clients (throughput, p50, p99) and at 1 client (p50): one instance with 2
threads, two 1-thread instances, and one instance of 2 stages with 1 thread each.
Chunking: a 5,000-word text of real sentences through ``minilm`` (int8, the default) in this
process, chunked and truncated, best of 5 runs, then served over HTTP (median of 5 requests).

The ``--json`` object: ``load_average`` (1-min, at start), ``pipeline`` (one object per
configuration: ``name``, ``args``, ``worker_rss_mb`` (each worker or stage process, MiB, after
start-up), ``closed32`` and ``closed1`` with ``throughput_rps``, ``latency_ms`` {p50, p99},
``errors``), ``stage_weights_mb`` (parameter MiB each stage holds, K=1/2/3), ``chunking`` (``words``, ``bytes``, ``tokens``,
``windows``, ``offline_ms`` {chunked, truncated} per thread count, ``served_ms`` {chunked,
truncated}). Every server is started here and stopped by its PID; load goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
from rich.progress import Progress

sys.path.insert(0, str(Path(__file__).parent))
from harness import Serving, bench

from dlproxy.models.builtin import minilm
from dlproxy.models.builtin.corpus import sentences
from dlproxy.models.builtin.minilm_stages import MiniLMStage

CONFIGS: list[tuple[str, list[str]]] = [
    ("K=1, 1 instance x 2 threads", ["--instances", "1", "--threads", "2"]),
    ("K=1, 2 instances x 1 thread", ["--instances", "2", "--threads", "1"]),
    ("K=2, 1 instance, 1 thread per stage", ["--pipeline-stages", "2", "--instances", "1"]),
]


def long_text(words: int = 5000, seed: int = 7) -> str:
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < words:
        out += rng.choice(sentences()).split()
    return " ".join(out[:words])


def summary(run: dict[str, Any]) -> dict[str, Any]:
    return {
        "throughput_rps": round(run["throughput_rps"], 1),
        "latency_ms": {k: run["latency_ms"][k] for k in ("p50", "p99")},
        "errors": run["errors"],
    }


def pipeline(duration: float, progress: Progress) -> list[dict[str, Any]]:
    task = progress.add_task("pipeline", total=len(CONFIGS) * 2)
    results = []
    for name, args in CONFIGS:
        progress.update(task, description=f"pipeline: {name}")
        with Serving("--model", "minilm:torch", "--max-batch", "32", *args) as server:
            workers = psutil.Process(server.process.pid).children()
            rss_mb = sorted(round(w.memory_info().rss / 2**20) for w in workers)
            closed32 = bench(server.url, "minilm", 32, duration)
            progress.advance(task)
            closed1 = bench(server.url, "minilm", 1, duration)
            progress.advance(task)
        results.append(
            {
                "name": name,
                "args": args,
                "worker_rss_mb": rss_mb,
                "closed32": summary(closed32),
                "closed1": summary(closed1),
            }
        )
    return results


def stage_weights_mb() -> dict[str, list[float]]:
    """Parameter MiB each stage holds, for K = 1 (the whole model), 2 and 3."""
    whole = minilm.load_bert()
    out = {"K=1": [round(sum(p.numel() * 4 for p in whole.parameters()) / 2**20, 1)]}
    for count in (2, 3):
        stages = [MiniLMStage("torch", index, count) for index in range(count)]
        for stage in stages:
            stage.load()
        out[f"K={count}"] = [round(stage.parameter_bytes() / 2**20, 1) for stage in stages]
    return out


def best_ms(call: Any, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return round(min(times) * 1000, 1)


def post_ms(url: str, text: str, truncate: bool) -> float:
    body = {
        "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}],
        "parameters": {"truncate": truncate},
    }
    request = urllib.request.Request(
        f"{url}/v2/models/minilm/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as response:
        assert response.status == 200
        response.read()
    return (time.perf_counter() - started) * 1000


def chunking(progress: Progress) -> dict[str, Any]:
    task = progress.add_task("chunking: offline", total=3)
    text = long_text()
    splitter = minilm.load_splitter()
    tokens = len(splitter[0].encode(text, add_special_tokens=False).ids)
    result: dict[str, Any] = {
        "words": len(text.split()),
        "bytes": len(text.encode()),
        "tokens": tokens,
        "windows": len(minilm.text_windows(splitter, [text])),
        "offline_ms": {},
    }
    for threads in (1, 2):
        model = minilm.MiniLM("int8", threads=threads)
        model.load()
        result["offline_ms"][f"{threads} thread(s)"] = {
            "chunked": best_ms(lambda m=model: m.embed([text])),
            "truncated": best_ms(lambda m=model: m.embed([text], truncate=True)),
        }
        progress.advance(task)
    progress.update(task, description="chunking: served")
    with Serving("--model", "minilm", "--instances", "1", "--threads", "2") as server:
        for truncate in (False, True):
            post_ms(server.url, text, truncate)  # warm-up (and not a cache: no cache is on)
        result["served_ms"] = {
            key: round(statistics.median(post_ms(server.url, text, t) for _ in range(5)), 1)
            for key, t in (("chunked", False), ("truncated", True))
        }
    progress.advance(task)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="measured s per bench run")
    parser.add_argument("--json", type=Path, help="write the results as one JSON object")
    parser.add_argument("--skip-pipeline", action="store_true", help="chunking figures only")
    args = parser.parse_args()
    results: dict[str, Any] = {"load_average": os.getloadavg()[0]}
    with Progress() as progress:
        if not args.skip_pipeline:
            results["pipeline"] = pipeline(args.duration, progress)
            results["stage_weights_mb"] = stage_weights_mb()
        results["chunking"] = chunking(progress)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
