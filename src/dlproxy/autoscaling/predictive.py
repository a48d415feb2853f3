"""Predictive scaling: size the pool for the arrival rate expected when a new instance is ready.

A reactive policy sees a ramp only once it has arrived, and its new instances come a start-up
later; this one fits Holt's linear trend to the arrival rate and provisions for the highest rate
forecast over ``startup_time + lead`` seconds, so the instances are ready as the load comes. Each
instance is given ``target_utilisation`` of what it can serve (1 / service time at its current
batch sizes); requests already queued add the rate needed to clear them in ``drain_time``.
"""

from __future__ import annotations

import math

from dlproxy.autoscaling.base import Snapshot
from dlproxy.autoscaling.forecast import Holt
from dlproxy.autoscaling.queueing import service_time


class Predictive:
    """Forecast the request rate (Holt) over the start-up time and scale ahead of it."""

    def __init__(
        self,
        alpha: float = 0.5,
        beta: float = 0.1,
        target_utilisation: float = 0.95,
        lead: float = 2.0,
        drain_time: float = 5.0,
    ) -> None:
        if not 0.0 < target_utilisation <= 1.0:
            raise ValueError(
                f"Predictive 'target_utilisation' must be in (0, 1] (got {target_utilisation})."
            )
        self.forecast = Holt(alpha, beta)
        self.target_utilisation = target_utilisation
        self.lead = lead
        self.drain_time = drain_time
        self._service_time = 0.0

    def desired(self, snapshot: Snapshot, now: float) -> int:
        self.forecast.update(now, snapshot.arrival_rate)
        measured = service_time(snapshot)
        if measured > 0:
            self._service_time = measured  # keep the last figure through idle spells
        current = snapshot.ready + snapshot.starting
        if self._service_time <= 0:  # nothing to size with yet: hold
            return max(1, current)
        rate = self.forecast.peak(snapshot.startup_time + self.lead)
        rate += snapshot.queued / self.drain_time
        return max(1, math.ceil(rate * self._service_time / self.target_utilisation))
