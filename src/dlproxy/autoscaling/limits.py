"""The bounds every scaling decision passes through, once, whatever the policy.

Policies say how many instances they would like; ``apply_limits`` turns that into how many the pool
gets: within ``[min_instances, max_instances]``, no more than ``max_step_up`` / ``max_step_down`` at
a time, and not while a cooldown runs. The live controller and the simulator both call it, so a
simulated policy meets exactly the brakes it meets in production.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds and brakes on the instance count of one model."""

    min_instances: int = 1
    max_instances: int = 16
    up_cooldown: float = 0.0
    """Seconds after a scale-up before the next scale-up (instances already starting count)."""
    down_cooldown: float = 15.0
    """Seconds after any change before a scale-down: a burst that just ended may come back, and
    an instance removed now costs a whole start-up to get back."""
    max_step_up: int | None = None
    """Most instances added at once (None: no limit)."""
    max_step_down: int | None = None
    """Most instances removed at once (None: no limit)."""

    def __post_init__(self) -> None:
        if not 0 <= self.min_instances <= self.max_instances:
            raise ValueError(
                f"Limits need 0 <= min_instances <= max_instances "
                f"(got min_instances={self.min_instances}, max_instances={self.max_instances})."
            )
        for name in ("max_step_up", "max_step_down"):
            step = getattr(self, name)
            if step is not None and step < 1:
                raise ValueError(f"Limits '{name}' must be at least 1 or None (got {step}).")


@dataclass(slots=True)
class LimitState:
    """When the count last went up and down; owned by the caller, one per pool."""

    last_up: float = -math.inf
    last_down: float = -math.inf


def apply_limits(current: int, desired: int, now: float, limits: Limits, state: LimitState) -> int:
    """The count to scale to now, given the policy's ``desired``; records a change in ``state``.

    ``current`` is the count the pool is heading to (ready + starting, not draining). Bounds come
    first, so a pool outside them is brought back even during a cooldown.
    """
    target = min(max(desired, limits.min_instances), limits.max_instances)
    if current < limits.min_instances or current > limits.max_instances:
        target = min(max(current, limits.min_instances), limits.max_instances)
    elif target > current:
        if now - state.last_up < limits.up_cooldown:
            return current
        if limits.max_step_up is not None:
            target = min(target, current + limits.max_step_up)
    elif target < current:
        if now - max(state.last_up, state.last_down) < limits.down_cooldown:
            return current
        if limits.max_step_down is not None:
            target = max(target, current - limits.max_step_down)
    if target > current:
        state.last_up = now
    elif target < current:
        state.last_down = now
    return target


@dataclass(frozen=True)
class ScalingPlan:
    """How one model's pool is scaled: the policy by name, its options, and its limits (each
    model of a repository may have its own)."""

    policy: str
    options: dict[str, float] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
