"""Load traces: a request rate over time, and the Poisson arrivals that follow it.

A trace is the rate (requests/s) at each ``step`` seconds; arrivals are a Poisson process whose
rate is that trace (piecewise constant), drawn with numpy in one go. The built-in shapes:

- ``step``: a base rate that jumps to 5x at a third of the run and back at two thirds.
- ``bursty``: a base rate with random bursts (2-5x, rising over 10-40 s, holding 30-120 s,
  falling over 20-60 s, one every ~5 min on average): flash crowds, which ramp, not jump.
- ``diurnal``: a day compressed into ``period`` seconds (an hour by default): a sinusoid from
  night (0.1x peak) to midday (peak), starting at night.
- ``file:CSV``: ``time,rate`` rows (a header line is allowed), interpolated linearly.

Bursty and diurnal rates also wander slowly (5%, over about 30 s), as real load does.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TRACES = ("step", "bursty", "diurnal", "file:CSV")
BASE_RATE = 300.0  # req/s: about one instance's worth (minilm int8, 1 thread)
PEAK_RATE = 1500.0  # req/s: four to five instances' worth


@dataclass(frozen=True, slots=True)
class Trace:
    """``rates[i]`` requests/s during ``[i * step, (i + 1) * step)``."""

    name: str
    rates: np.ndarray
    step: float = 1.0

    @property
    def duration(self) -> float:
        return len(self.rates) * self.step

    def rate_at(self, t: float) -> float:
        i = min(max(int(t / self.step), 0), len(self.rates) - 1)
        return float(self.rates[i])

    def arrivals(self, seed: int) -> np.ndarray:
        """Sorted arrival times, seconds: a Poisson process at this rate (seeded)."""
        rng = np.random.default_rng(seed)
        counts = rng.poisson(np.maximum(self.rates, 0.0) * self.step)
        starts = np.repeat(np.arange(len(self.rates)) * self.step, counts)
        return np.sort(starts + rng.random(starts.size) * self.step)


def step_trace(duration: float, base: float = BASE_RATE, peak: float = PEAK_RATE) -> Trace:
    """``base``, then ``peak`` from a third to two thirds of the run."""
    t = np.arange(int(duration))
    rates = np.where((t >= duration / 3) & (t < 2 * duration / 3), peak, base)
    return Trace("step", rates.astype(float))


def bursty_trace(
    duration: float, seed: int, base: float = BASE_RATE, mean_gap: float = 300.0
) -> Trace:
    """``base`` with bursts at random times (Poisson, ``mean_gap`` s apart on average)."""
    rng = np.random.default_rng(seed + 1)  # not the arrivals' stream
    t = np.arange(int(duration), dtype=float)
    rates = np.full(t.size, base)
    start = rng.exponential(mean_gap / 2)
    while start < duration:
        rise, hold, fall = rng.uniform(10, 40), rng.uniform(30, 120), rng.uniform(20, 60)
        height = base * (rng.uniform(2.0, 5.0) - 1.0)
        shape = np.interp(t - start, [0, rise, rise + hold, rise + hold + fall], [0, 1, 1, 0])
        rates += height * np.where((t >= start) & (t <= start + rise + hold + fall), shape, 0.0)
        start += rise + hold + fall + rng.exponential(mean_gap)
    return Trace("bursty", np.maximum(rates * drift(t.size, rng), 0.0))


def diurnal_trace(
    duration: float, seed: int, peak: float = PEAK_RATE, period: float = 3600.0
) -> Trace:
    """One compressed day per ``period``: night at 0.1 x ``peak``, midday at ``peak``."""
    rng = np.random.default_rng(seed + 1)
    t = np.arange(int(duration), dtype=float)
    shape = 0.55 - 0.45 * np.cos(2 * np.pi * t / period)
    return Trace("diurnal", np.maximum(peak * shape * drift(t.size, rng), 0.0))


def drift(
    length: int, rng: np.random.Generator, std: float = 0.05, tau: float = 30.0
) -> np.ndarray:
    """Slow random factors around 1 (AR(1), ``tau`` s correlation): real load wanders for minutes,
    beyond the second-to-second Poisson noise that the arrivals already have."""
    keep = float(np.exp(-1.0 / tau))
    shocks = rng.standard_normal(length) * np.sqrt(1.0 - keep * keep)
    walk = np.empty(length)
    value = rng.standard_normal()
    for k in range(length):
        value = keep * value + shocks[k]
        walk[k] = value
    return 1.0 + std * walk


def file_trace(path: Path, duration: float | None = None) -> Trace:
    """``time,rate`` rows, linearly interpolated per second (to ``duration`` or the last time)."""
    points: list[tuple[float, float]] = []
    with path.open(newline="", encoding="utf-8") as rows:
        for number, row in enumerate(csv.reader(rows), start=1):
            if not row or row[0].strip().startswith("#"):
                continue
            try:
                points.append((float(row[0]), float(row[1])))
            except (ValueError, IndexError):
                if number == 1:
                    continue  # a header
                raise ValueError(f"{path}:{number}: expected 'time,rate', got {row!r}") from None
    if not points:
        raise ValueError(f"{path}: no 'time,rate' rows")
    times, rates = np.array(points).T
    if np.any(np.diff(times) < 0) or np.any(rates < 0):
        raise ValueError(f"{path}: times must not decrease and rates must not be negative")
    end = duration if duration is not None else max(float(times[-1]), 1.0)
    return Trace(f"file:{path.name}", np.interp(np.arange(int(end)) + 0.5, times, rates))


def parse_trace(spec: str, duration: float | None, seed: int) -> Trace:
    """A trace from its command-line name: ``step``, ``bursty``, ``diurnal`` or ``file:CSV``."""
    if spec.startswith("file:"):
        return file_trace(Path(spec[5:]), duration)
    length = 3600.0 if duration is None else duration
    if length < 1:
        raise ValueError(f"--duration must be at least 1 s (got {length})")
    if spec == "step":
        return step_trace(length)
    if spec == "bursty":
        return bursty_trace(length, seed)
    if spec == "diurnal":
        return diurnal_trace(length, seed)
    raise ValueError(f"Unknown trace '{spec}'; choose one of: {', '.join(TRACES)}.")
