"""The live autoscaler: every tick, snapshot each pool, ask the policy, apply limits, act.

The pools are looked up at every tick (models and versions come and go at run time), and each
pool carries its own ``ScalingPlan`` (policy, options, limits: a repository model may set its
own); pools without one are left alone.

Policies only say a number; this controller owns everything else once: min/max, cooldowns and
step limits (the same ``Limits`` the simulator uses), the decision log with its reason, the
``scaling_decisions`` counter, and the pool changes (an added instance takes traffic only when
ready; a removed one drains first, so no request is dropped).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import psutil

from dlproxy.autoscaling.base import ScalingPolicy, Snapshot, create_policy
from dlproxy.autoscaling.limits import LimitState, apply_limits
from dlproxy.clock import Clock, MonotonicClock
from dlproxy.instances.pool import InstancePool

log = logging.getLogger("dlproxy.autoscaling")
_TOTAL_MEMORY = psutil.virtual_memory().total


@dataclass
class PoolWatch:
    """What the controller remembers of a pool between ticks, to turn counters into rates."""

    requests: int = 0
    at: float = 0.0
    limit_state: LimitState = field(default_factory=LimitState)


class Controller:
    def __init__(
        self,
        pools: Callable[[], Iterable[InstancePool]],
        arrivals: Counter[tuple[str, str]],
        decisions: Counter[tuple[str, str]],
        interval: float = 1.0,
        startup_time: float = 3.0,
        clock: Clock | None = None,
    ) -> None:
        self.pools = pools  # every pool served now
        self.arrivals = arrivals  # requests per (model, version), counted by the gateway
        self.interval = interval
        self.startup_time = startup_time
        self.clock = clock or MonotonicClock()
        self.decisions = decisions  # (model, "up" | "down") -> count, exported as a metric
        self._policies: dict[int, ScalingPolicy] = {}  # by id(pool): a reloaded pool starts anew
        self._watch: dict[int, PoolWatch] = {}
        self._changing: dict[int, asyncio.Task[None]] = {}

    async def run(self) -> None:
        """Tick until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            current = [pool for pool in self.pools() if pool.scaling is not None]
            for key in set(self._watch) - {id(pool) for pool in current}:
                self._watch.pop(key, None)  # unloaded or replaced
                self._policies.pop(key, None)
            for pool in current:
                try:
                    self.tick(pool)
                except Exception:  # one pool's bad tick must not end scaling for all, silently
                    log.exception("autoscaler: scaling %s failed this tick", pool.name)

    def _policy(self, pool: InstancePool) -> ScalingPolicy:
        key = id(pool)
        if key not in self._policies:
            assert pool.scaling is not None
            self._policies[key] = create_policy(pool.scaling.policy, **pool.scaling.options)
            self._watch[key] = PoolWatch(
                requests=self.arrivals[pool.name, pool.version], at=self.clock.now()
            )
        return self._policies[key]

    def snapshot(self, pool: InstancePool) -> Snapshot:
        now = self.clock.now()
        self._policy(pool)
        watch = self._watch[id(pool)]
        made = pool.made()  # the instances it scales: remote servers are not its to count
        stats = [i.batcher.statistics() for i in made]
        requests = self.arrivals[pool.name, pool.version]
        elapsed = max(now - watch.at, 1e-9)
        rate = max(0.0, (requests - watch.requests) / elapsed)
        watch.requests, watch.at = requests, now
        ready = [i for i in made if i.state == "ready"]
        service = [
            i.load.service_time / max(1.0, s.batch_size.sum / max(1, s.batch_size.count))
            for i, s in zip(made, stats, strict=True)
            if i.load.batches
        ]
        cpu = [i.load.cpu_percent / 100 / max(1, i.threads) for i in ready]
        p99 = max((s.inference.quantile(0.99) for s in stats), default=0.0)
        return Snapshot(
            model=pool.name,
            ready=len(ready),
            starting=sum(1 for i in made if i.state == "starting"),
            inflight=sum(s.inflight_requests for s in stats),
            queued=sum(s.queued_requests for s in stats),
            arrival_rate=rate,
            service_time=sum(service) / len(service) if service else 0.0,
            cpu=sum(cpu) / len(cpu) if cpu else 0.0,
            # Per instance, as a share of the machine: adding instances must not raise it.
            memory=(sum(i.load.rss_bytes for i in ready) / len(ready) / _TOTAL_MEMORY)
            if ready
            else 0.0,
            p99_latency=p99,
            startup_time=self.startup_time,
        )

    def tick(self, pool: InstancePool) -> None:
        key = id(pool)
        if key in self._changing or pool.scaling is None:  # one change at a time per pool
            return
        policy = self._policy(pool)
        snapshot = self.snapshot(pool)
        now = self.clock.now()
        current = snapshot.ready + snapshot.starting
        wanted = policy.desired(snapshot, now)
        limits = pool.scaling.limits
        target = apply_limits(current, wanted, now, limits, self._watch[key].limit_state)
        if target == current:
            return
        direction = "up" if target > current else "down"
        self.decisions[pool.name, direction] += 1
        log.info(
            "scaling %s%s %s: %d -> %d (policy wants %d; rate %.1f/s, queued %d, in flight %d, "
            "cpu %.0f%%, p99 %.1f ms)",
            pool.name,
            f" version {pool.version}" if pool.version else "",
            direction,
            current,
            target,
            wanted,
            snapshot.arrival_rate,
            snapshot.queued,
            snapshot.inflight,
            snapshot.cpu * 100,
            snapshot.p99_latency * 1000,
        )
        task = asyncio.ensure_future(pool.scale_to(target))
        self._changing[key] = task
        task.add_done_callback(functools.partial(self._changed, key, pool.name))

    def _changed(self, key: int, name: str, task: asyncio.Task[None]) -> None:
        self._changing.pop(key, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("scaling %s failed: %s", name, task.exception())

    async def close(self) -> None:
        for task in self._changing.values():
            task.cancel()
