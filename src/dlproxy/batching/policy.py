"""How big a batch may grow and how long a partial batch may wait: fixed, or adaptive (AIMD).

Both kinds answer the same small interface (``BatchingPolicy``): the batcher reads ``max_batch``
and ``max_delay`` each time it forms a batch and reports every finished batch to ``observe``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from dlproxy.clock import Clock, MonotonicClock


class BatchingPolicy(Protocol):
    """What the batcher asks of a batching policy."""

    @property
    def max_batch(self) -> int:
        """Most items in the next batch."""
        ...

    @property
    def max_delay(self) -> float:
        """Seconds a partial batch may wait behind a busy instance."""
        ...

    def observe(self, latency: float, batch_size: int) -> None:
        """A batch of ``batch_size`` items came back ``latency`` seconds after it was sent."""
        ...

    def cap(self, limit: int) -> None:
        """The model takes at most ``limit`` items per call: never form a bigger batch."""
        ...


@dataclass(slots=True)
class FixedBatching:
    """A fixed limit. ``max_delay`` bounds how long a partial batch waits behind a busy instance."""

    max_batch: int = 32
    max_delay: float = 0.002

    def observe(self, latency: float, batch_size: int) -> None:
        """Fixed limits learn nothing."""

    def cap(self, limit: int) -> None:
        """Lower the limit to the model's own bound."""
        self.max_batch = max(1, min(self.max_batch, limit))


@dataclass(slots=True)
class AdaptiveBatching:
    """Clipper's AIMD: grow ``max_batch`` by ``step`` while recent batches meet their latency
    budget, cut it to ``decrease`` x (at least 1) as soon as they do not.

    What is compared: the p99 of recent *batch* latencies (send to reply, as the batcher measures
    it) against ``slo x batch_share``. The batch latency is the part of a request's latency that
    the batch size controls. The rest is the wait in the queue, which the batch limit cannot fix
    (at overload the queue grows whatever the limit) and admission control bounds
    (``--max-queue-wait-ms``). Below overload a queued request waits for about one batch in
    flight to come back and then for its own, so ``batch_share = 0.5`` leaves half the SLO for
    that wait.

    Only batches that reached the limit (or came within a cut of it: requests of several items
    rarely fill it exactly) say anything about it, so only they count. A small batch that is slow
    was slowed by something else (a busy CPU, a long input); cutting the limit for it would only
    cost throughput, and at high load that lengthens the queue it was meant to shorten. A limit
    that batches do not reach does not grow either: growing it idly would let the next burst
    through as one oversized batch.

    The window holds the latencies of the last ``window`` counted batches since the limit last
    changed, none older than ``horizon`` seconds: after a change the old figures describe a limit
    no longer in force. The limit grows after ``samples`` counted batches within the budget, and
    is cut as soon as the window's p99 is over it (with fewer than 100 batches in the window that
    is the slowest one): Clipper's rule, back off at the first miss, probe upwards slowly.
    """

    slo: float
    """The latency objective for a request, seconds."""
    max_batch_cap: int
    """The limit never grows beyond this (``--max-batch``)."""
    max_delay: float = 0.002
    clock: Clock = field(default_factory=MonotonicClock)
    start: int = 1
    step: int = 1
    decrease: float = 0.9
    batch_share: float = 0.5
    """Share of the SLO one batch's latency may take (see above)."""
    samples: int = 4
    """Counted batches within the budget that it takes to grow the limit once."""
    window: int = 32
    horizon: float = 2.0
    max_batch: int = field(init=False)
    increases: int = field(init=False, default=0)
    decreases: int = field(init=False, default=0)
    _recent: deque[tuple[float, float]] = field(init=False, repr=False)  # (when, latency)

    def __post_init__(self) -> None:
        if not self.slo > 0:
            raise ValueError(f"slo must be > 0 seconds, got {self.slo}")
        if self.max_batch_cap < 1:
            raise ValueError(f"max_batch_cap must be >= 1, got {self.max_batch_cap}")
        if not 0 < self.decrease < 1:
            raise ValueError(f"decrease must be between 0 and 1, got {self.decrease}")
        if self.step < 1 or self.samples < 1 or self.window < self.samples:
            raise ValueError(
                f"need step >= 1 and 1 <= samples <= window, got step {self.step}, "
                f"samples {self.samples}, window {self.window}"
            )
        self.max_batch = min(max(1, self.start), self.max_batch_cap)
        self._recent = deque(maxlen=self.window)

    def cap(self, limit: int) -> None:
        """Neither the limit nor its ceiling may exceed the model's own bound."""
        self.max_batch_cap = max(1, min(self.max_batch_cap, limit))
        self.max_batch = min(self.max_batch, self.max_batch_cap)

    @property
    def budget(self) -> float:
        """Seconds the p99 batch latency may take."""
        return self.slo * self.batch_share

    def p99(self) -> float | None:
        """The p99 (nearest rank) of the counted batch latencies; None when there are none."""
        self._expire()
        if not self._recent:
            return None
        ordered = sorted(latency for _, latency in self._recent)
        return ordered[math.ceil(0.99 * len(ordered)) - 1]

    def observe(self, latency: float, batch_size: int) -> None:
        """One batch came back: cut the limit if the window is over budget, else maybe grow it."""
        if batch_size > self.max_batch:
            return  # formed before the last cut (still in flight then): already acted upon
        if batch_size < math.ceil(self.max_batch * self.decrease):
            return  # the limit did not bind: this batch says nothing about it
        self._expire()
        self._recent.append((self.clock.now(), latency))
        p99 = self.p99()
        assert p99 is not None
        if p99 > self.budget:
            if self.max_batch > 1:
                cut = max(1, min(self.max_batch - 1, int(self.max_batch * self.decrease)))
                self.max_batch = cut
                self.decreases += 1
            self._recent.clear()
        elif len(self._recent) >= self.samples and self.max_batch < self.max_batch_cap:
            self.max_batch = min(self.max_batch_cap, self.max_batch + self.step)
            self.increases += 1
            self._recent.clear()

    def _expire(self) -> None:
        cutoff = self.clock.now() - self.horizon
        while self._recent and self._recent[0][0] < cutoff:
            self._recent.popleft()


__all__ = ["AdaptiveBatching", "BatchingPolicy", "FixedBatching"]
