"""Batching policies: AIMD on a manual clock against synthetic batch latencies."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from dlproxy import protocol
from dlproxy.batching.batcher import Batcher
from dlproxy.batching.policy import AdaptiveBatching, FixedBatching
from dlproxy.clock import ManualClock
from dlproxy.types import InferenceRequest

SLO = 0.100  # budget 50 ms per batch with the default batch_share 0.5


def policy(clock: ManualClock, cap: int = 32, **options: float) -> AdaptiveBatching:
    return AdaptiveBatching(SLO, cap, clock=clock, **options)  # type: ignore[arg-type]


def feed_full(p: AdaptiveBatching, clock: ManualClock, latency: float, batches: int) -> None:
    """``batches`` batches, each filled to the current limit."""
    for _ in range(batches):
        clock.advance(latency)
        p.observe(latency, p.max_batch)


def test_fixed_batching_learns_nothing() -> None:
    fixed = FixedBatching(8, 0.001)
    fixed.observe(10.0, 8)
    assert (fixed.max_batch, fixed.max_delay) == (8, 0.001)


def test_it_grows_additively_while_full_batches_meet_the_budget() -> None:
    clock = ManualClock()
    p = policy(clock, samples=4)
    assert p.max_batch == 1
    feed_full(p, clock, 0.010, 4)
    assert p.max_batch == 2
    feed_full(p, clock, 0.010, 4 * 5)
    assert p.max_batch == 7
    assert p.increases == 6


def test_batches_below_the_limit_do_not_grow_it() -> None:
    clock = ManualClock()
    p = policy(clock, start=8)
    for _ in range(100):
        clock.advance(0.01)
        p.observe(0.005, 3)  # light load: the limit is never reached
    assert p.max_batch == 8


def test_one_batch_over_the_budget_cuts_the_limit_by_ten_percent() -> None:
    clock = ManualClock()
    p = policy(clock, start=30)
    p.observe(0.060, 30)  # over 50 ms
    assert p.max_batch == 27
    assert p.decreases == 1


def test_a_slow_batch_well_below_the_limit_does_not_cut_it() -> None:
    """A busy CPU slows small batches too; only batches that reached the limit judge it."""
    clock = ManualClock()
    p = policy(clock, start=20)
    p.observe(0.200, 5)
    p.observe(0.200, 17)
    assert p.max_batch == 20
    p.observe(0.200, 18)  # within a cut (10%) of the limit: counts
    assert p.max_batch == 18


def test_a_cut_always_takes_at_least_one_and_never_goes_below_one() -> None:
    clock = ManualClock()
    p = policy(clock, start=5)
    sizes = []
    for _ in range(8):
        p.observe(1.0, p.max_batch)
        sizes.append(p.max_batch)
    assert sizes == [4, 3, 2, 1, 1, 1, 1, 1]


def test_it_never_grows_beyond_the_cap() -> None:
    clock = ManualClock()
    p = policy(clock, cap=6, step=4, samples=1)
    feed_full(p, clock, 0.001, 50)
    assert p.max_batch == 6


def test_batches_formed_before_a_cut_do_not_cut_again() -> None:
    clock = ManualClock()
    p = policy(clock, start=20)
    p.observe(0.080, 20)
    assert p.max_batch == 18
    p.observe(0.080, 20)  # the second batch in flight, formed at 20: already acted upon
    assert p.max_batch == 18


def test_old_latencies_expire_from_the_window() -> None:
    clock = ManualClock()
    p = policy(clock, horizon=1.0, samples=2)
    p.observe(0.010, 1)
    assert p.p99() == 0.010
    clock.advance(1.5)
    assert p.p99() is None


@pytest.mark.parametrize(("a", "b"), [(0.002, 0.0025), (0.010, 0.0011), (0.001, 0.004)])
def test_it_converges_near_the_largest_batch_within_the_budget(a: float, b: float) -> None:
    """Batch latency = a + b x size: the limit settles between 10% below the largest size that
    fits and one step above it (the probe that finds the edge again, and is cut at once)."""
    clock = ManualClock()
    p = policy(clock, cap=64)
    best = min(64, int((p.budget - a) / b))
    limits = []
    for _ in range(3000):
        latency = a + b * p.max_batch
        clock.advance(latency)
        p.observe(latency, p.max_batch)
        limits.append(p.max_batch)
    settled = limits[-1000:]
    assert max(settled) == best + 1
    assert min(settled) >= int((best + 1) * 0.9)
    over = sum(a + b * size > p.budget for size in settled)
    assert over < len(settled) * 0.15


def test_it_needs_a_positive_slo_and_cap() -> None:
    with pytest.raises(ValueError, match="slo"):
        AdaptiveBatching(0.0, 8)
    with pytest.raises(ValueError, match="max_batch_cap"):
        AdaptiveBatching(0.1, 0)


async def test_the_batcher_reports_each_batch_and_follows_the_new_limit() -> None:
    """The batcher reads ``max_batch`` when it forms each batch, so a cut applies at once."""
    sent: list[tuple[int, asyncio.Future[protocol.Result]]] = []

    def worker(
        inputs: dict[str, np.ndarray], parameters: object
    ) -> asyncio.Future[protocol.Result]:
        future: asyncio.Future[protocol.Result] = asyncio.get_running_loop().create_future()
        sent.append((len(inputs["x"]), future))
        return future

    def answer(index: int) -> None:
        size, future = sent[index]
        wire = {"y": protocol.to_wire(np.zeros(size, dtype=np.int64))}
        future.set_result(protocol.Result(index, wire, protocol.Load()))

    adaptive = AdaptiveBatching(0.010, 10, start=4, clock=ManualClock())  # budget 5 ms
    b = Batcher(worker, 100, adaptive, depth=1)
    futures = [
        b.submit(InferenceRequest("m", {"x": np.array([i], dtype=np.int64)}), {}) for i in range(9)
    ]
    assert [s for s, _ in sent] == [1]  # idle: the first goes at once
    answer(0)
    await asyncio.sleep(0)
    assert [s for s, _ in sent] == [1, 4]
    await asyncio.sleep(0.011)  # a full batch slower than the 5 ms budget
    answer(1)
    await asyncio.sleep(0)
    assert adaptive.max_batch == 3
    assert [s for s, _ in sent] == [1, 4, 3]
    answer(2)
    await asyncio.sleep(0)
    assert [s for s, _ in sent] == [1, 4, 3, 1]
    answer(3)
    await asyncio.gather(*futures)


def test_cap_lowers_the_limit_to_the_models_bound() -> None:
    fixed = FixedBatching(max_batch=32)
    fixed.cap(1)  # an ONNX file exported with batch 1
    assert fixed.max_batch == 1
    fixed.cap(64)  # a higher bound never raises the limit
    assert fixed.max_batch == 1
    adaptive = AdaptiveBatching(slo=0.05, max_batch_cap=32, start=16)
    adaptive.cap(8)
    assert (adaptive.max_batch, adaptive.max_batch_cap) == (8, 8)
