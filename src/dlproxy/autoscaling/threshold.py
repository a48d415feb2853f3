"""Threshold scaling on resource use: the classic rule (cloud auto-scaling groups, HPA on CPU).

Above ``upper``, add instances; below ``lower``, remove some; in between, hold. Either way the
new count is the one that brings use back to the middle of the band, so after any change use
lands between the thresholds and the rule holds still: the gap between them is the hysteresis
that stops a load near one threshold from flapping the count up and down. Use is the larger of
CPU and memory, smoothed over ``window`` seconds so one busy tick is not a trend.
"""

from __future__ import annotations

import math

from dlproxy.autoscaling.base import Snapshot


class Threshold:
    """Scale on max(CPU, memory) of the instances against ``upper`` / ``lower`` thresholds."""

    def __init__(self, upper: float = 0.8, lower: float = 0.4, window: float = 5.0) -> None:
        if not 0.0 < lower < upper:
            raise ValueError(
                f"Threshold needs 0 < lower < upper (got lower={lower}, upper={upper})."
            )
        self.upper = upper
        self.lower = lower
        self.window = window
        self.use = 0.0
        self._at: float | None = None

    def desired(self, snapshot: Snapshot, now: float) -> int:
        self._smooth(max(snapshot.cpu, snapshot.memory), now)
        ready = snapshot.ready
        current = ready + snapshot.starting
        if ready == 0:  # nothing measured yet: wait for the starting instances
            return max(current, 1)
        # Starting instances will share the work: size for the work the ready ones do now.
        work = self.use * ready
        middle = (self.upper + self.lower) / 2.0
        if self.use > self.upper:
            return max(current, math.ceil(work / middle))
        if self.use < self.lower and work / current < self.lower:
            return max(1, math.ceil(work / middle))
        return current

    def _smooth(self, value: float, now: float) -> None:
        """An exponential average with time constant ``window``, exact for irregular ticks."""
        if self._at is None or self.window <= 0:
            self.use, self._at = value, now
            return
        dt = max(0.0, now - self._at)
        weight = 1.0 - math.exp(-dt / self.window)
        self.use += weight * (value - self.use)
        self._at = now
