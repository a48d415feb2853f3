"""A cheap fixed-bucket histogram for the hot path: one bisect and two adds per observation.

Stateful objects keep these and expose them in ``statistics()``; ``metrics.py`` turns them into
Prometheus histograms at scrape time, so no metrics library runs per request.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.002,
    0.004,
    0.006,
    0.008,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    10.0,
)
SIZE_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 128, 256, 512, 1024)


class Histogram:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound, cumulative count) pairs in Prometheus' form, ending with +Inf."""
        total = 0
        out = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), total))
        return out

    def quantile(self, q: float) -> float:
        """An estimate (the upper bound of the bucket holding the q-quantile); 0 when empty."""
        total = self.count
        if total == 0:
            return 0.0
        rank = q * total
        seen = 0
        for bound, count in zip((*self.bounds, self.bounds[-1]), self.counts, strict=True):
            seen += count
            if seen >= rank:
                return bound
        return self.bounds[-1]
