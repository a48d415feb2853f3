"""Cost-aware scaling: the cheapest pool whose predicted tail latency meets the SLO.

Instances cost ``cost_per_hour`` each, so the cheapest pool is the smallest one; the M/G/c model
(``queueing.py``) predicts the ``quantile`` latency of each size from the arrival rate and the
measured service time (per request, at the batch sizes the instances run, so batching is in it),
and the policy takes the first size that meets ``slo``. With ``use_forecast`` the rate planned for
is the highest forecast over the start-up time (Holt, as ``predictive``), so the pool is sized for
the load it will meet when a new instance is ready. ``budget_per_hour`` caps the spend: past it,
the SLO gives way.
"""

from __future__ import annotations

import math

from dlproxy.autoscaling.base import Snapshot
from dlproxy.autoscaling.forecast import Holt
from dlproxy.autoscaling.queueing import fewest_servers, service_time


class Cost:
    """The fewest instances whose modelled ``quantile`` latency is within ``slo`` seconds."""

    def __init__(
        self,
        slo: float = 0.1,
        cost_per_hour: float = 1.0,
        quantile: float = 0.99,
        use_forecast: bool = True,
        cs2: float = 0.5,
        max_utilisation: float = 1.0,
        alpha: float = 0.5,
        beta: float = 0.1,
        lead: float = 2.0,
        drain_time: float = 5.0,
        budget_per_hour: float = math.inf,
    ) -> None:
        if slo <= 0 or cost_per_hour <= 0 or not 0.0 < quantile < 1.0:
            raise ValueError(
                f"Cost needs slo > 0, cost_per_hour > 0 and 0 < quantile < 1 (got slo={slo}, "
                f"cost_per_hour={cost_per_hour}, quantile={quantile})."
            )
        self.slo = slo
        self.cost_per_hour = cost_per_hour
        self.quantile = quantile
        self.use_forecast = use_forecast
        self.cs2 = cs2
        self.max_utilisation = max_utilisation
        self.lead = lead
        self.drain_time = drain_time
        self.budget_per_hour = budget_per_hour
        self.forecast = Holt(alpha, beta)
        self._service_time = 0.0

    def desired(self, snapshot: Snapshot, now: float) -> int:
        self.forecast.update(now, snapshot.arrival_rate)
        measured = service_time(snapshot)
        if measured > 0:
            self._service_time = measured
        current = snapshot.ready + snapshot.starting
        if self._service_time <= 0:
            return max(1, current)
        if self.use_forecast:
            rate = self.forecast.peak(snapshot.startup_time + self.lead)
        else:
            rate = self.forecast.level
        rate += snapshot.queued / self.drain_time
        wanted = fewest_servers(
            rate, self._service_time, self.slo, self.quantile, self.cs2, self.max_utilisation
        )
        if math.isfinite(self.budget_per_hour):
            wanted = min(wanted, max(1, math.floor(self.budget_per_hour / self.cost_per_hour)))
        return wanted
