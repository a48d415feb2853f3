"""The modelled instance: how long a batch takes, how much may queue, how long it takes to start.

Batch times come from offline measurements (``dlproxy bench --offline MODEL --json OUT`` writes
items/s per batch size; ``load_profile`` reads that file), interpolated linearly between measured
sizes. The default profile is minilm int8 on one intra-op thread on the 2-core development
machine: 2.9 ms for one sentence, about 430 sentences/s at batch 32 (74 ms a batch). Between those
two points a straight line (a fixed cost per batch plus a cost per item) is the simplest model
the two measurements support. Start-up is about 3 s: a minilm worker process starting, loading the
ONNX model and answering its warm-up batch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_STARTUP = 3.0


@dataclass(frozen=True, slots=True)
class ServiceProfile:
    """Seconds per batch at measured batch sizes; other sizes are interpolated."""

    sizes: tuple[int, ...]
    seconds: tuple[float, ...]
    source: str = "minilm:int8, 1 thread (default)"

    def __post_init__(self) -> None:
        if len(self.sizes) != len(self.seconds) or not self.sizes:
            raise ValueError("a service profile needs one batch time per batch size")
        if list(self.sizes) != sorted(set(self.sizes)) or min(self.seconds) <= 0:
            raise ValueError("profile batch sizes must increase and batch times be positive")

    def batch_time(self, size: int) -> float:
        """Seconds to run a batch of ``size`` items (beyond the largest size: per item)."""
        if size > self.sizes[-1]:
            return self.seconds[-1] * size / self.sizes[-1]
        return float(np.interp(size, self.sizes, self.seconds))

    def table(self, max_batch: int) -> list[float]:
        """``batch_time`` for 0..max_batch, looked up once instead of per batch."""
        return [0.0] + [self.batch_time(b) for b in range(1, max_batch + 1)]

    def throughput(self, size: int) -> float:
        """Items per second at batch ``size``."""
        return size / self.batch_time(size)


def default_profile() -> ServiceProfile:
    return ServiceProfile(sizes=(1, 32), seconds=(0.0029, 32 / 430.0))


def load_profile(path: Path) -> ServiceProfile:
    """A profile from ``dlproxy bench --offline --json`` output (``throughput``: size -> items/s)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    throughput = data.get("throughput") if isinstance(data, dict) else None
    if not isinstance(throughput, dict) or not throughput:
        raise ValueError(f"{path}: expected a 'throughput' object (batch size -> items/s)")
    points = sorted((int(size), float(rate)) for size, rate in throughput.items())
    if any(rate <= 0 for _, rate in points):
        raise ValueError(f"{path}: throughputs must be positive")
    threads = data.get("threads", "?")
    return ServiceProfile(
        sizes=tuple(size for size, _ in points),
        seconds=tuple(size / rate for size, rate in points),
        source=f"{data.get('model', path.name)}, {threads} thread(s) ({path})",
    )


@dataclass(frozen=True, slots=True)
class InstanceModel:
    """Everything the simulator assumes about one instance of the model."""

    profile: ServiceProfile
    max_batch: int = 32
    max_queue: int = 512
    """Requests that may wait per ready instance; beyond that arrivals are refused (503)."""
    startup_time: float = DEFAULT_STARTUP
    service_cv: float = 0.1
    """Coefficient of variation of batch times (lognormal): real batches are not all alike."""
