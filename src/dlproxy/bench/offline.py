"""The model alone, in this process: items/s per batch size, the ceiling for served throughput.

Each batch goes through ``Model.predict`` exactly as a worker calls it, so decoding and tokenizing
are timed too; only building the request arrays (the gateway's job) is left out. Texts come from
the offline corpus; models without a ``BYTES`` input get random tensors shaped from their spec.

Manual use: ``python -m dlproxy.bench.offline minilm:int8 --threads 2 [--json OUT]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from dlproxy.console import Bar
from dlproxy.models.base import Model
from dlproxy.models.registry import create_model
from dlproxy.types import DTYPES, ModelSpec

DEFAULT_BATCH_SIZES: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
DEFAULT_SECONDS_PER_SIZE = 2.0  # 7 sizes: about 15-17 s in all with warm-up and loading
MIN_BATCHES = 3  # even a slow batch size is timed over a few batches


@dataclass(slots=True)
class OfflineResult:
    """What ``measure_offline`` found; ``to_dict`` is the ``--json`` object."""

    model: str
    version: str
    platform: str
    threads: int
    throughput: dict[int, float]  # items/s per batch size
    latency_p50_ms: float  # batch of one item
    latency_p99_ms: float
    best_batch_size: int
    best_throughput: float
    load_seconds: float
    seconds: float
    batches: dict[int, int] = field(default_factory=dict)  # timed batches per batch size

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: batch sizes become string keys, numbers are rounded sensibly."""
        data = asdict(self)
        data["throughput"] = {str(k): round(v, 1) for k, v in self.throughput.items()}
        data["batches"] = {str(k): v for k, v in self.batches.items()}
        for key in ("latency_p50_ms", "latency_p99_ms", "best_throughput"):
            data[key] = round(data[key], 3)
        data["load_seconds"] = round(self.load_seconds, 2)
        data["seconds"] = round(self.seconds, 2)
        return data


def measure_offline(
    reference: str,
    threads: int = 1,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    seconds_per_size: float = DEFAULT_SECONDS_PER_SIZE,
    sentences: Sequence[str] | None = None,
    progress: bool = True,
) -> OfflineResult:
    """Load ``reference`` here and time ``predict`` at each batch size (after a warm-up)."""
    if not batch_sizes or min(batch_sizes) < 1:
        raise ValueError("batch_sizes must be positive integers.")
    if sentences is None:
        from dlproxy.models.builtin.corpus import sentences as corpus

        sentences = corpus()
    texts = [s.encode("utf-8") for s in sentences] or [b"An empty corpus needs one sentence."]
    started = time.perf_counter()
    model = create_model(reference, threads=threads)
    model.load()
    load_seconds = time.perf_counter() - started
    limit = model.spec.max_batch_size
    batch_sizes = [s for s in batch_sizes if s <= limit] or [limit]  # larger would be refused

    throughput: dict[int, float] = {}
    counts: dict[int, int] = {}
    one_item: list[float] = []
    total = len(batch_sizes) * seconds_per_size
    with Bar("offline benchmark", total, enabled=progress, transient=True, columns=_COLUMNS) as bar:
        for done, size in enumerate(batch_sizes):
            batches = _batches(model.spec, texts, size)
            for inputs in batches[:2]:  # warm-up: buffers for this shape
                model.predict(inputs, {})
            durations = _time(model, batches, seconds_per_size, bar, done * seconds_per_size)
            throughput[size] = size * len(durations) / sum(durations)
            counts[size] = len(durations)
            if size == 1:
                one_item = durations
            bar.update(
                description=f"offline benchmark (batch {size}: {throughput[size]:.0f} items/s)"
            )
    if not one_item:  # batch 1 not in the sweep: latency still means one item
        one_item = _time(model, _batches(model.spec, texts, 1), 0.5)
    best = max(throughput, key=lambda size: throughput[size])
    return OfflineResult(
        model=reference,
        version=model.spec.version,
        platform=model.spec.platform,
        threads=threads,
        throughput=throughput,
        latency_p50_ms=statistics.median(one_item) * 1000,
        latency_p99_ms=float(np.percentile(one_item, 99)) * 1000,
        best_batch_size=best,
        best_throughput=throughput[best],
        load_seconds=load_seconds,
        seconds=time.perf_counter() - started,
        batches=counts,
    )


def _time(
    model: Model,
    batches: list[dict[str, np.ndarray]],
    seconds: float,
    bar: Bar | None = None,
    offset: float = 0.0,
) -> list[float]:
    """Per-batch durations, cycling through ``batches`` for ``seconds`` (at least a few); the bar
    shows the sweep's seconds, ``offset`` of them done before."""
    durations: list[float] = []
    began = time.perf_counter()
    index = 0
    while index < MIN_BATCHES or time.perf_counter() - began < seconds:
        inputs = batches[index % len(batches)]
        t0 = time.perf_counter()
        model.predict(inputs, {})
        durations.append(time.perf_counter() - t0)
        index += 1
        if bar is not None and index % 8 == 0:
            bar.update(completed=offset + min(time.perf_counter() - began, seconds))
    if bar is not None:
        bar.update(completed=offset + seconds)
    return durations


def _batches(spec: ModelSpec, texts: list[bytes], size: int) -> list[dict[str, np.ndarray]]:
    """Distinct batches of ``size`` items covering the corpus (at least one), built beforehand."""
    count = max(1, min(len(texts) // size, 64))
    rng = np.random.default_rng(0)
    batches = []
    for b in range(count):
        inputs: dict[str, np.ndarray] = {}
        for tensor in spec.inputs:
            if tensor.datatype == "BYTES":
                rows = [texts[(b * size + i) % len(texts)] for i in range(size)]
                array = np.empty(size, dtype=object)
                array[:] = rows
            else:
                shape = (size, *(d if d > 0 else 1 for d in tensor.shape[1:]))
                dtype = DTYPES[tensor.datatype]
                if dtype.kind == "f":
                    array = rng.standard_normal(shape).astype(dtype)
                else:
                    array = np.zeros(shape, dtype=dtype)
            inputs[tensor.name] = array
        batches.append(inputs)
    return batches


_COLUMNS = ("bar", "remaining")


def _print(result: OfflineResult) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result.model} ({result.platform}, {result.threads} thread(s))")
    table.add_column("batch size", justify="right")
    table.add_column("items/s", justify="right")
    for size, rate in result.throughput.items():
        mark = " *" if size == result.best_batch_size else ""
        table.add_row(str(size), f"{rate:.0f}{mark}")
    console = Console()
    console.print(table)
    console.print(
        f"batch-1 latency p50 {result.latency_p50_ms:.2f} ms, p99 {result.latency_p99_ms:.2f} ms; "
        f"best: batch {result.best_batch_size} at {result.best_throughput:.0f} items/s"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dlproxy.bench.offline MODEL[:VARIANT] [--threads N] [--json OUT]``."""
    parser = argparse.ArgumentParser(prog="python -m dlproxy.bench.offline", description=__doc__)
    parser.add_argument("model", help="minilm[:VARIANT], a .onnx path or module:Class")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--batch-sizes", default=",".join(map(str, DEFAULT_BATCH_SIZES)), help="comma-separated"
    )
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS_PER_SIZE, help="per size")
    parser.add_argument("--json", metavar="OUT", help="write the result as one JSON object")
    args = parser.parse_args(argv)
    sizes = tuple(int(s) for s in args.batch_sizes.split(",") if s.strip())
    result = measure_offline(args.model, args.threads, sizes, args.seconds, progress=True)
    _print(result)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(result.to_dict(), out, indent=2)
            out.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
