"""Scaling on concurrency, as Knative's autoscaler (KPA) does: a stable and a panic window.

Concurrency is what is queued plus what is in flight; ``target`` is how much of it one instance
should carry. The count follows the average over ``stable_window`` (a blip does not move it),
unless the average over the short ``panic_window`` asks for ``panic_threshold`` times the ready
instances: then the pool is in panic, follows the short window up at once, and does not scale
down until a whole stable window has passed without a new panic.

Concurrency is sampled once a tick, so until a whole panic window of samples exists the count
is held: one sample that caught a single request in flight would otherwise read as more than one
instance's worth (at a target below 1) and start an instance nobody needs.
"""

from __future__ import annotations

import math
from collections import deque

from dlproxy.autoscaling.base import Snapshot


class QueueLength:
    """Queued + in-flight requests per instance against ``target``, with panic mode for bursts."""

    def __init__(
        self,
        target: float = 0.75,
        stable_window: float = 60.0,
        panic_window: float = 6.0,
        panic_threshold: float = 2.0,
    ) -> None:
        if target <= 0 or not 0 < panic_window <= stable_window:
            raise ValueError(
                f"QueueLength needs target > 0 and 0 < panic_window <= stable_window (got "
                f"target={target}, panic_window={panic_window}, stable_window={stable_window})."
            )
        self.target = target
        self.stable_window = stable_window
        self.panic_window = panic_window
        self.panic_threshold = panic_threshold
        self.panic_until = -math.inf
        self._samples: deque[tuple[float, float]] = deque()
        self._held = 0  # the count while in panic: it only goes up
        self._first: float | None = None  # when the first sample was taken

    def desired(self, snapshot: Snapshot, now: float) -> int:
        concurrency = float(snapshot.queued + snapshot.inflight)
        self._samples.append((now, concurrency))
        if self._first is None:
            self._first = now
        if now - self._first < self.panic_window:  # too few samples to tell a load from a blip
            return max(1, snapshot.ready + snapshot.starting)
        while self._samples and self._samples[0][0] <= now - self.stable_window:
            self._samples.popleft()
        stable = math.ceil(self._average(now, self.stable_window) / self.target)
        panic = math.ceil(self._average(now, self.panic_window) / self.target)
        if panic >= self.panic_threshold * max(1, snapshot.ready):
            if now >= self.panic_until:
                self._held = snapshot.ready + snapshot.starting
            self.panic_until = now + self.stable_window
        if now < self.panic_until:
            self._held = max(self._held, panic, stable)
            return max(1, self._held)
        return max(1, stable)

    def _average(self, now: float, window: float) -> float:
        """The mean of the samples taken in the last ``window`` seconds (the newest included)."""
        total = count = 0.0
        for at, value in reversed(self._samples):
            if at <= now - window:
                break
            total += value
            count += 1
        return total / count if count else 0.0
