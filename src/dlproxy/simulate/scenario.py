"""One comparison: a trace, an instance model, the controller's limits and an SLO, run per policy.

Every policy meets the same arrivals (one seeded draw) and starts from the same pool. The two
baselines are static pools sized by simulation, with no model in between: **static at peak** is
the fewest instances that meet the SLO (at most 1% of requests slower or refused) with the trace's
highest rate held for two minutes, **static at mean** the same at its mean rate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from dlproxy.autoscaling.base import ScalingPolicy, create_policy
from dlproxy.autoscaling.limits import Limits
from dlproxy.simulate.engine import Outcome, Simulation, Static
from dlproxy.simulate.model import InstanceModel
from dlproxy.simulate.traces import Trace

SIZING_SECONDS = 120.0  # how long a constant rate is held to size a static pool
SIZING_BUDGET = 0.01  # the share of requests a static pool may lose and still "meet the SLO"
INITIAL_UTILISATION = 0.7  # autoscaled runs start with the pool this busy at the first rate

OnTick = Callable[[float], None] | None


@dataclass
class Scenario:
    trace: Trace
    model: InstanceModel
    limits: Limits
    slo: float
    """Seconds: a request slower than this, or refused, violates the SLO."""
    seed: int = 0
    interval: float = 1.0
    _arrivals: np.ndarray | None = field(default=None, repr=False)

    @property
    def arrivals(self) -> np.ndarray:
        if self._arrivals is None:
            self._arrivals = self.trace.arrivals(self.seed)
        return self._arrivals

    def initial_instances(self) -> int:
        """The pool every autoscaled run starts with: the first rate at 70% of batch-1 speed."""
        first = float(np.mean(self.trace.rates[:10]))
        wanted = math.ceil(first * self.model.profile.batch_time(1) / INITIAL_UTILISATION)
        return min(max(wanted, self.limits.min_instances, 1), self.limits.max_instances)

    def run_policy(self, name: str, on_tick: OnTick = None, **options: float) -> Outcome:
        """Run the registered policy ``name`` (with its constructor ``options``)."""
        return self.run(create_policy(name, **options), self.initial_instances(), on_tick=on_tick)

    def run_static(self, instances: int, on_tick: OnTick = None) -> Outcome:
        limits = Limits(min_instances=instances, max_instances=instances)
        return self.run(Static(instances), instances, limits, on_tick)

    def run(
        self,
        policy: ScalingPolicy,
        initial: int,
        limits: Limits | None = None,
        on_tick: OnTick = None,
    ) -> Outcome:
        """Run any policy object from a pool of ``initial`` ready instances."""
        simulation = Simulation(
            self.arrivals,
            policy,
            self.model,
            self.trace.duration,
            limits or self.limits,
            initial,
            self.interval,
            self.seed,
            on_tick,
        )
        return simulation.run()

    def static_size(self, rate: float) -> int:
        """The fewest instances that meet the SLO with ``rate`` held for two minutes."""
        steady = Trace("constant", np.full(int(SIZING_SECONDS), rate))
        sizing = Scenario(steady, self.model, self.limits, self.slo, self.seed, self.interval)
        best = self.model.max_batch / self.model.profile.batch_time(self.model.max_batch)
        instances = max(1, math.ceil(rate / best))
        while instances < 10_000:
            if violation_share(sizing.run_static(instances), self.slo) <= SIZING_BUDGET:
                return instances
            instances += 1
        return instances


def violation_share(outcome: Outcome, slo: float) -> float:
    """The share of requests that were refused or answered later than ``slo``."""
    total = outcome.accepted.size + outcome.refused.size
    if total == 0:
        return 0.0
    late = int(np.count_nonzero(outcome.latency > slo))
    return (late + outcome.refused.size) / total
