"""The scaling interface: a snapshot of a model's pool in, a desired instance count out.

Policies are pure functions of what they are shown (they may keep their own history, e.g. a
forecast); the controller alone applies bounds, cooldowns and step limits, and changes the pool.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from dlproxy.plugins import load_named

POLICIES: dict[str, str] = {
    "threshold": "dlproxy.autoscaling.threshold:Threshold",
    "queue_length": "dlproxy.autoscaling.queue_length:QueueLength",
    "predictive": "dlproxy.autoscaling.predictive:Predictive",
    "cost": "dlproxy.autoscaling.cost:Cost",
}


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A model's pool as the controller sees it at one tick (the simulator builds the same)."""

    model: str
    ready: int
    """Instances serving now."""
    starting: int
    """Instances started but not yet ready (they count toward capacity soon)."""
    inflight: int
    """Requests sent to instances and not yet answered."""
    queued: int
    """Requests waiting in the instances' queues."""
    arrival_rate: float
    """Requests per second over the last tick."""
    service_time: float
    """Seconds an instance needs per request at the batch sizes it runs now (0 if unknown)."""
    cpu: float
    """Mean CPU use of the instances, as a fraction of the cores each is given (0..1+)."""
    memory: float
    """Memory used on the machine, as a fraction (0..1)."""
    p99_latency: float
    """p99 of request latency over the last tick, seconds (0 if no requests)."""
    startup_time: float
    """Seconds a new instance needs to become ready (measured, or a configured guess)."""


class ScalingPolicy(Protocol):
    """``desired`` returns how many instances the model should have; no I/O, no sleeping."""

    def desired(self, snapshot: Snapshot, now: float) -> int: ...


def create_policy(name: str, **options: float) -> ScalingPolicy:
    cls = load_named(POLICIES, name, "scaling policy")
    policy: ScalingPolicy = cls(**options)
    return policy
