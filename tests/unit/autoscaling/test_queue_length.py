from __future__ import annotations

from collections.abc import Callable

import pytest

from dlproxy.autoscaling.base import Snapshot
from dlproxy.autoscaling.queue_length import QueueLength
from dlproxy.clock import ManualClock

MakeSnapshot = Callable[..., Snapshot]


def tick(
    policy: QueueLength, make: MakeSnapshot, clock: ManualClock, concurrency: float, ready: int
) -> int:
    clock.advance(1.0)
    return policy.desired(make(ready=ready, inflight=int(concurrency)), clock.now())


def test_follows_the_stable_average_at_target_per_instance(make_snapshot: MakeSnapshot) -> None:
    policy, clock = QueueLength(target=2.0), ManualClock()
    answers = [tick(policy, make_snapshot, clock, 12, 6) for _ in range(120)]
    assert answers[-1] == 6


def test_panic_window_reacts_to_a_burst_within_seconds(make_snapshot: MakeSnapshot) -> None:
    policy, clock = QueueLength(target=1.0), ManualClock()
    for _ in range(120):
        assert tick(policy, make_snapshot, clock, 4, 4) == 4
    burst = [tick(policy, make_snapshot, clock, 20, 4) for _ in range(6)]
    first = next(n for n, answer in enumerate(burst, start=1) if answer >= 8)
    assert first <= 3  # the stable window alone would still say 5 or 6 here
    assert burst[-1] >= 16  # it follows the short window up: 20 in flight over 1 per instance


def test_stable_window_ignores_a_blip(make_snapshot: MakeSnapshot) -> None:
    policy, clock = QueueLength(target=1.0), ManualClock()
    for _ in range(120):
        tick(policy, make_snapshot, clock, 3.5, 4)
    answers = [tick(policy, make_snapshot, clock, c, 4) for c in (6, 6, 3.5, 3.5, 3.5)]
    assert answers == [4] * 5


def test_no_scale_down_until_a_stable_window_after_the_panic(
    make_snapshot: MakeSnapshot,
) -> None:
    policy, clock = QueueLength(target=1.0, stable_window=60.0), ManualClock()
    for _ in range(60):
        tick(policy, make_snapshot, clock, 4, 4)
    peak = max(tick(policy, make_snapshot, clock, 40, 4) for _ in range(5))
    assert peak >= 8
    calm = [tick(policy, make_snapshot, clock, 0, peak) for _ in range(70)]
    assert calm[:50] == [peak] * 50  # still in panic: held
    assert calm[-1] == 1  # a stable window later, the quiet is believed


def test_a_request_caught_in_flight_at_start_does_not_start_an_instance(
    make_snapshot: MakeSnapshot,
) -> None:
    policy, clock = QueueLength(target=0.75, panic_window=6.0), ManualClock()
    # Light load (a request in flight at some ticks): one instance carries it, from the first tick.
    answers = [tick(policy, make_snapshot, clock, c, 1) for c in (1, 0, 0, 1, 0, 0, 0, 0, 0, 0)]
    assert answers == [1] * 10


def test_after_the_first_panic_window_a_burst_is_followed(make_snapshot: MakeSnapshot) -> None:
    policy, clock = QueueLength(target=1.0, panic_window=6.0), ManualClock()
    answers = [tick(policy, make_snapshot, clock, 10, 1) for _ in range(8)]
    assert answers[:5] == [1] * 5  # too few samples yet
    assert answers[-1] >= 10


@pytest.mark.parametrize(
    "options", [{"target": 0.0}, {"panic_window": 0.0}, {"panic_window": 90.0}]
)
def test_invalid_windows_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="QueueLength"):
        QueueLength(**options)
