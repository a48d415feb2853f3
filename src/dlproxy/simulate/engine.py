"""A discrete-event simulation of one model's pool under a scaling policy, on a virtual clock.

Events (a heap) are batch completions, instances becoming ready and the controller's tick.
Arrivals are one sorted numpy array drawn beforehand; between two events nothing leaves the
queue, so at each event the arrivals since the previous one are admitted in order until the
queue bound (``max_queue`` per ready instance, as the gateway's per-instance queues fill) and the
rest are refused, exactly as if each had been handled on its own. While an instance is idle the
queue is empty, and the next arrival goes straight to it without an event.

Instances share one FIFO queue, which is what least-loaded routing over per-instance queues
approximates, and batch greedily: an idle instance takes everything queued, up to ``max_batch``,
at once (the real batcher's rule). Every ``interval`` the REAL policy object is asked for a count
through ``apply_limits`` (the live controller's bounds); instances start after ``startup_time``,
and removed ones finish their batch first (drain). Each request's latency is recorded, and a
simulated hour at ~1,000 req/s takes about five seconds.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dlproxy.autoscaling.base import ScalingPolicy, Snapshot
from dlproxy.autoscaling.limits import Limits, LimitState, apply_limits
from dlproxy.simulate.model import InstanceModel

DONE, READY, TICK = 0, 1, 2
STARTING, IDLE, BUSY, DRAINING, STOPPED = 0, 1, 2, 3, 4
MEMORY = 0.2  # the simulator models no memory pressure: a constant, low figure


class Static:
    """A fixed count: the provisioning baselines."""

    def __init__(self, instances: int) -> None:
        self.instances = instances

    def desired(self, snapshot: Snapshot, now: float) -> int:
        return self.instances


@dataclass(frozen=True, slots=True)
class Timeline:
    """Per tick: time, arrivals in the tick, ready / starting instances, the policy's wish."""

    time: np.ndarray
    arrivals: np.ndarray
    ready: np.ndarray
    starting: np.ndarray
    desired: np.ndarray


@dataclass(frozen=True, slots=True)
class Outcome:
    """Everything a run leaves behind; the report turns it into figures."""

    accepted: np.ndarray
    """Arrival times of the requests admitted, in arrival order."""
    latency: np.ndarray
    """Seconds from arrival to answer, aligned with ``accepted``."""
    refused: np.ndarray
    """Arrival times of the requests refused because the queue was full."""
    instance_seconds: float
    """Instance lifetime within the trace, start-up and draining included."""
    duration: float
    timeline: Timeline


class Simulation:
    """One run: ``Simulation(arrivals, policy, ...).run()`` -> ``Outcome``."""

    def __init__(
        self,
        arrivals: np.ndarray,
        policy: ScalingPolicy,
        model: InstanceModel,
        duration: float,
        limits: Limits,
        initial: int,
        interval: float = 1.0,
        seed: int = 0,
        on_tick: Callable[[float], None] | None = None,
    ) -> None:
        self.on_tick = on_tick
        self.arr: list[float] = arrivals.tolist()
        self.policy, self.model, self.duration = policy, model, duration
        self.limits, self.limit_state, self.interval = limits, LimitState(), interval
        self.table = model.profile.table(model.max_batch)
        sigma = math.sqrt(math.log1p(model.service_cv**2))
        noise = np.random.default_rng(seed + 2).lognormal(-sigma * sigma / 2, sigma, 1 << 16)
        self.noise: list[float] = noise.tolist()
        self.events: list[tuple[float, int, int, int]] = []
        self.seq = 0
        self.state: list[int] = []
        self.started: list[float] = []
        self.stopped: list[float] = []
        self.batch: list[int] = []
        self.starting: list[int] = []
        self.ready: list[int] = []  # taking traffic: idle or busy, not draining
        self.idle: list[int] = []
        self.qlen = self.seen = self.tick_seen = self.inflight = self.batches = 0
        self.accepted: list[float] = []
        self.refused: list[float] = []
        self.counts: list[int] = []  # per batch: items, and when it is done
        self.dones: list[float] = []
        self.busy = 0.0  # batch seconds started since the last tick
        self.items = 0
        self.service_time = 0.0
        self.marks = (0, 0)  # (batches, accepted) at the last tick
        self.rows: list[tuple[float, int, int, int, int]] = []
        for _ in range(initial):
            self._ready(self._add(0.0), 0.0)

    def run(self) -> Outcome:
        self._push(self.interval, TICK, -1)
        events, arr, idle, pop = self.events, self.arr, self.idle, heapq.heappop
        handlers = (self._done, self._on_ready, self._tick)
        while True:
            # While an instance is idle the queue is empty, so an arrival due before the next
            # event goes straight to it: no event is needed for it.
            if idle and self.seen < len(arr):
                at = arr[self.seen]
                if not events or at < events[0][0]:
                    self.seen += 1
                    self.qlen += 1
                    self.accepted.append(at)
                    self._start_batch(idle.pop(), at)
                    continue
            if not events:
                return self._outcome()
            t, _, kind, i = pop(events)
            handlers[kind](t, i)

    # -- events -------------------------------------------------------------------------------

    def _done(self, t: float, i: int) -> None:
        self._admit(t)
        self.inflight -= self.batch[i]
        if self.state[i] == DRAINING:
            self._stop(i, t)
        elif self.qlen:
            self._start_batch(i, t)
        else:
            self.state[i] = IDLE
            self.idle.append(i)

    def _on_ready(self, t: float, i: int) -> None:
        if self.state[i] != STARTING:  # cancelled while starting
            return
        self._admit(t)
        self.starting.remove(i)
        self._ready(i, t)

    def _tick(self, t: float, i: int) -> None:
        self._admit(t)
        arrived, self.tick_seen = self.seen - self.tick_seen, self.seen
        since = t - self.rows[-1][0] if self.rows else self.interval
        snapshot = self._snapshot(t, arrived / since)
        wanted = self.policy.desired(snapshot, t)
        current = len(self.ready) + len(self.starting)
        target = apply_limits(current, wanted, t, self.limits, self.limit_state)
        self._scale(target, t)
        self.rows.append((t, arrived, len(self.ready), len(self.starting), wanted))
        if t + self.interval <= self.duration:
            self._push(t + self.interval, TICK, -1)
        if self.on_tick is not None:
            self.on_tick(t)

    # -- mechanics ----------------------------------------------------------------------------

    def _admit(self, t: float) -> None:
        """Admit the arrivals up to ``t`` while the queue has room; refuse the rest."""
        n = bisect_right(self.arr, t, self.seen)
        new = n - self.seen
        if new:
            take = min(new, max(0, self.model.max_queue * len(self.ready) - self.qlen))
            if take:
                self.accepted.extend(self.arr[self.seen : self.seen + take])
            if take < new:
                self.refused.extend(self.arr[self.seen + take : n])
            self.qlen += take
            self.seen = n

    def _start_batch(self, i: int, t: float) -> None:
        size = min(self.qlen, self.model.max_batch)
        seconds = self.table[size] * self.noise[self.batches & 0xFFFF]
        self.batches += 1
        self.qlen -= size
        self.inflight += size
        self.state[i], self.batch[i] = BUSY, size
        self.busy += seconds
        self.items += size
        self.counts.append(size)
        self.dones.append(t + seconds)
        self._push(t + seconds, DONE, i)

    def _scale(self, target: int, t: float) -> None:
        """Start instances, or remove some: starting ones first, then idle, then busy (drain)."""
        current = len(self.ready) + len(self.starting)
        for _ in range(target - current):
            i = self._add(t)
            self.starting.append(i)
            self._push(t + self.model.startup_time, READY, i)
        for _ in range(current - target):
            if self.starting:
                self._stop(self.starting.pop(), t)
                continue
            i = self.idle.pop() if self.idle else self.ready[-1]
            self.ready.remove(i)
            if self.state[i] == IDLE:
                self._stop(i, t)
            else:
                self.state[i] = DRAINING

    def _snapshot(self, t: float, rate: float) -> Snapshot:
        if self.items:
            self.service_time = self.busy / self.items
        cpu = min(1.0, self.busy / (self.interval * len(self.ready))) if self.ready else 0.0
        # p99 of the requests whose batch started in the last tick (a batch lasts milliseconds).
        batches, accepted = self.marks
        counts = self.counts[batches:]
        p99 = 0.0
        if counts:
            done = np.repeat(self.dones[batches:], counts)
            start = np.array(self.accepted[accepted : accepted + len(done)])
            p99 = float(np.percentile(done - start, 99))
        self.marks = (len(self.counts), accepted + sum(counts))
        self.busy, self.items = 0.0, 0
        return Snapshot(
            model="simulated",
            ready=len(self.ready),
            starting=len(self.starting),
            inflight=self.inflight,
            queued=self.qlen,
            arrival_rate=rate,
            service_time=self.service_time,
            cpu=cpu,
            memory=MEMORY,
            p99_latency=p99,
            startup_time=self.model.startup_time,
        )

    def _add(self, t: float) -> int:
        self.state.append(STARTING)
        self.started.append(t)
        self.stopped.append(math.inf)
        self.batch.append(0)
        return len(self.state) - 1

    def _ready(self, i: int, t: float) -> None:
        """``i`` takes traffic: it starts on what is queued at once, or waits idle."""
        self.ready.append(i)
        if self.qlen:
            self._start_batch(i, t)
        else:
            self.state[i] = IDLE
            self.idle.append(i)

    def _stop(self, i: int, t: float) -> None:
        self.state[i], self.stopped[i] = STOPPED, t

    def _push(self, t: float, kind: int, i: int) -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, self.seq, kind, i))

    def _outcome(self) -> Outcome:
        started, stopped = np.array(self.started), np.array(self.stopped)
        lifetime = np.clip(np.minimum(stopped, self.duration) - started, 0.0, None)
        accepted = np.array(self.accepted)
        latency = np.repeat(np.array(self.dones), self.counts) - accepted
        rows = np.array(self.rows, dtype=float).reshape(-1, 5)
        timeline = Timeline(*(rows[:, k] for k in range(5)))
        return Outcome(
            accepted=accepted,
            latency=latency,
            refused=np.array(self.refused),
            instance_seconds=float(lifetime.sum()),
            duration=self.duration,
            timeline=timeline,
        )
