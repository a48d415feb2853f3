"""Original vs compressed, measured in one run: file size, throughput, latency, quality.

Both models are loaded in this process and timed through ``Model.predict``, as a worker calls it
(decoding and tokenizing included), on the same items. Each round is one pass over the same
batches, so both models see the same sentence lengths. The machine is shared, so the two are
timed in alternating rounds and every batch keeps its fastest time over the rounds (as
``timeit`` keeps its best): a burst of load from another process slows one round of one model,
not the result, and with enough rounds both figures approach those of a quiet machine.
- throughput: items/s at batch 32 over every full batch of the quality items, each at its best;
- latency: batch-1 p50 in ms over the first LATENCY_ITEMS items, each at its best.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlproxy.models.base import Model

THROUGHPUT_BATCH = 32
LATENCY_ITEMS = 64
INVARIANCE_TOLERANCE = 1e-5  # float32 round-off: larger means the batch changes the numbers


@dataclass(frozen=True, slots=True)
class Measurement:
    """One model's figures."""

    file_bytes: int
    throughput: float  # items/s at batch THROUGHPUT_BATCH
    latency_p50_ms: float  # batch of one item


@dataclass(slots=True)
class Report:
    """A compression run; ``to_dict`` is the ``--json`` object (keys in ``compress``'s docs)."""

    model: str
    method: str
    out: str
    threads: int
    original: Measurement
    compressed: Measurement
    quality: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)
    batch_invariance: tuple[float, float] = (0.0, 0.0)  # largest difference: original, compressed
    seconds: float = 0.0

    @property
    def invariant(self) -> bool:
        """The compressed model gives an item the same result alone and in a batch."""
        return self.batch_invariance[1] <= INVARIANCE_TOLERANCE

    @property
    def speedup(self) -> float:
        """Compressed throughput over original throughput."""
        return self.compressed.throughput / self.original.throughput

    @property
    def size_ratio(self) -> float:
        """Compressed file size over original file size."""
        return self.compressed.file_bytes / self.original.file_bytes

    def to_dict(self) -> dict[str, Any]:
        data = {
            "model": self.model,
            "method": self.method,
            "out": self.out,
            "threads": self.threads,
            "original": _rounded(asdict(self.original)),
            "compressed": _rounded(asdict(self.compressed)),
            "speedup": round(self.speedup, 3),
            "size_ratio": round(self.size_ratio, 3),
            "latency_ratio": round(
                self.compressed.latency_p50_ms / self.original.latency_p50_ms, 3
            ),
            "quality": {k: round(v, 5) for k, v in self.quality.items()},
            "details": self.details,
            "batch_invariance": {
                "original_max_difference": float(f"{self.batch_invariance[0]:.3g}"),
                "max_difference": float(f"{self.batch_invariance[1]:.3g}"),
                "invariant": self.invariant,
            },
            "seconds": round(self.seconds, 1),
        }
        return data


Tick = Callable[[], None]


def measure(
    original: Model,
    compressed: Model,
    workload: dict[str, np.ndarray],
    files: tuple[Path, Path],
    rounds: int = 5,
    tick: Tick = lambda: None,
) -> tuple[Measurement, Measurement]:
    """Time both models in ``rounds`` alternating rounds; ``tick`` is called after each part."""
    wide = _batches(workload, THROUGHPUT_BATCH)
    single = _batches(workload, 1)[:LATENCY_ITEMS]
    models = (original, compressed)
    for model in models:  # warm-up: buffers for both shapes
        model.predict(wide[0], {})
        model.predict(single[0], {})
    best_wide = [np.full(len(wide), np.inf) for _ in models]
    best_single = [np.full(len(single), np.inf) for _ in models]
    for _ in range(rounds):
        for index, model in enumerate(models):
            best_wide[index] = np.minimum(best_wide[index], _time(model, wide))
            tick()
            best_single[index] = np.minimum(best_single[index], _time(model, single))
            tick()
    return tuple(  # type: ignore[return-value]
        Measurement(
            path.stat().st_size,
            THROUGHPUT_BATCH * len(wide) / float(best_wide[i].sum()),
            float(np.median(best_single[i])) * 1000,
        )
        for i, path in enumerate(files)
    )


def batch_invariance(
    original: Model, compressed: Model, workload: dict[str, np.ndarray]
) -> tuple[float, float]:
    """Each model's largest element difference between items alone and in one batch of 32."""
    return batch_difference(original, workload), batch_difference(compressed, workload)


def batch_difference(model: Model, workload: dict[str, np.ndarray]) -> float:
    """Largest element difference between the first 32 items computed alone and together (and
    reversed): zero, up to float round-off, for a model whose rows never mix."""
    batch = _batches(workload, THROUGHPUT_BATCH)[0]
    alone = [model.predict({k: v[i : i + 1] for k, v in batch.items()}, {}) for i in range(32)]
    worst = 0.0
    for order in (slice(None), slice(None, None, -1)):
        together = model.predict({k: v[order] for k, v in batch.items()}, {})
        indexes = list(range(THROUGHPUT_BATCH))[order]
        for position, index in enumerate(indexes):
            for name, expected in alone[index].items():
                got = np.asarray(together[name])[position : position + 1]
                if got.dtype.kind == "f":
                    worst = max(worst, float(np.abs(got - np.asarray(expected)).max()))
    return worst


def parts(rounds: int) -> int:
    """How many ``tick`` calls ``measure`` makes: the progress bar's total."""
    return rounds * 4


def print_report(report: Report) -> None:
    """The side-by-side table, then the quality figures, on stdout."""
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"{report.model}: {report.method} ({report.threads} thread(s))", title_justify="left"
    )
    for column in ("", "original", "compressed", "ratio"):
        table.add_column(column, justify="right" if column else "left")
    o, c = report.original, report.compressed
    table.add_row(
        "file size", _size(o.file_bytes), _size(c.file_bytes), f"{report.size_ratio:.2f}x"
    )
    table.add_row(
        f"throughput (items/s, batch {THROUGHPUT_BATCH})",
        f"{o.throughput:.0f}",
        f"{c.throughput:.0f}",
        f"{report.speedup:.2f}x",
    )
    table.add_row(
        "latency p50 (ms, batch 1)",
        f"{o.latency_p50_ms:.2f}",
        f"{c.latency_p50_ms:.2f}",
        f"{c.latency_p50_ms / o.latency_p50_ms:.2f}x",
    )
    for key, value in report.quality.items():
        if key.startswith("original_"):
            continue  # shown beside its compressed counterpart
        before = report.quality.get(f"original_{key}")
        shown = "" if before is None else f"{before:.4f}"
        table.add_row(key.replace("_", " "), shown, f"{value:.4f}", "")
    table.add_row(
        "batch invariance (largest difference)",
        f"{report.batch_invariance[0]:.1e}",
        f"{report.batch_invariance[1]:.1e}",
        "",
    )
    console = Console()
    console.print(table)
    if not report.invariant:
        console.print(
            f"[bold]Not batch-invariant:[/bold] an item's result depends on the other items of its "
            f"batch (largest difference {report.batch_invariance[1]:.1e} > "
            f"{INVARIANCE_TOLERANCE:g}); the same request can get different numbers under load."
        )
    if report.details:
        console.print(", ".join(f"{k}: {v}" for k, v in report.details.items()))
    console.print(f"written to {report.out}")


def _time(model: Model, batches: list[dict[str, np.ndarray]]) -> np.ndarray:
    """Per-call durations of one pass over ``batches``, in seconds."""
    durations: list[float] = []
    for inputs in batches:
        t0 = time.perf_counter()
        model.predict(inputs, {})
        durations.append(time.perf_counter() - t0)
    return np.array(durations)


def _batches(workload: dict[str, np.ndarray], size: int) -> list[dict[str, np.ndarray]]:
    """Consecutive full batches of ``size`` rows (at least one, wrapping around if short)."""
    count = len(next(iter(workload.values())))
    starts = range(0, max(count - size + 1, 1), size)
    return [
        {
            k: np.resize(v, (max(count, size), *v.shape[1:]))[s : s + size]
            for k, v in workload.items()
        }
        for s in starts
    ]


def _rounded(values: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in values.items()}


def _size(count: int) -> str:
    return f"{count / 1e6:.1f} MB"
