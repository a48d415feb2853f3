"""Figures from simulated runs: one row per policy, the terminal table, the JSON object, the plot.

A request violates the SLO when it is answered later than ``slo_ms`` or refused (a refusal is a
failed request to its client). Latency percentiles are over the requests answered, as in
``dlproxy bench``. Instance-seconds count each instance from the moment it was asked for (its
start-up is paid for) until it stopped or the trace ended (its draining too); ``cost`` is that
times ``cost_per_hour``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from dlproxy.simulate.engine import Outcome

PLOT_POINTS = 240  # points of the latency line (one per 15 s for an hour)


@dataclass(frozen=True, slots=True)
class Row:
    """One policy's run, as the table and ``--json`` show it."""

    policy: str
    requests: int
    refused: int
    violations: int
    violation_pct: float
    instance_seconds: float
    cost: float
    mean_instances: float
    max_instances: int
    p50_ms: float | None
    p99_ms: float | None
    vs_static_peak: float | None = None
    """Instance-seconds as a share of the static-at-peak row's (1.0 = as many)."""

    def to_dict(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def summarise(policy: str, outcome: Outcome, slo: float, cost_per_hour: float) -> Row:
    requests = outcome.accepted.size + outcome.refused.size
    refused = outcome.refused.size
    violations = int(np.count_nonzero(outcome.latency > slo)) + refused
    p50 = p99 = None
    if outcome.latency.size:
        p50, p99 = (float(x) * 1000 for x in np.percentile(outcome.latency, [50, 99]))
    instances = outcome.timeline.ready + outcome.timeline.starting
    return Row(
        policy=policy,
        requests=requests,
        refused=refused,
        violations=violations,
        violation_pct=100.0 * violations / requests if requests else 0.0,
        instance_seconds=outcome.instance_seconds,
        cost=outcome.instance_seconds / 3600.0 * cost_per_hour,
        mean_instances=outcome.instance_seconds / outcome.duration,
        max_instances=int(instances.max()) if instances.size else 0,
        p50_ms=p50,
        p99_ms=p99,
    )


def relative_to(rows: list[Row], baseline: str) -> list[Row]:
    """``rows`` with ``vs_static_peak`` filled from the row named ``baseline``."""
    base = next((row for row in rows if row.policy == baseline), None)
    if base is None or base.instance_seconds <= 0:
        return rows
    share = base.instance_seconds
    return [replace(row, vs_static_peak=row.instance_seconds / share) for row in rows]


def table(rows: list[Row], title: str) -> Table:
    grid = Table(title=title)
    for name in (
        "policy",
        "instance-s",
        "vs peak",
        "cost",
        "requests",
        "SLO viol.",
        "refused",
        "p50 ms",
        "p99 ms",
        "mean / max inst.",
    ):
        grid.add_column(name, justify="left" if name == "policy" else "right")
    for row in rows:
        grid.add_row(
            row.policy,
            f"{row.instance_seconds:,.0f}",
            "-" if row.vs_static_peak is None else f"{row.vs_static_peak:.0%}",
            f"{row.cost:.2f}",
            f"{row.requests:,}",
            f"{row.violation_pct:.2f}%",
            f"{row.refused:,}",
            _ms(row.p50_ms),
            _ms(row.p99_ms),
            f"{row.mean_instances:.2f} / {row.max_instances}",
        )
    return grid


def markdown(rows: list[Row]) -> str:
    """The table as Markdown, for docs/benchmarks.md."""
    lines = [
        "| policy | instance-s | vs static peak | SLO violations | refused | p50 ms | p99 ms "
        "| mean / max instances |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        vs = "-" if row.vs_static_peak is None else f"{row.vs_static_peak:.0%}"
        lines.append(
            f"| {row.policy} | {row.instance_seconds:,.0f} | {vs} | {row.violation_pct:.2f}% "
            f"| {row.refused:,} | {_ms(row.p50_ms)} | {_ms(row.p99_ms)} "
            f"| {row.mean_instances:.2f} / {row.max_instances} |"
        )
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def windowed_quantile(
    times: np.ndarray, values: np.ndarray, window: float, duration: float, q: float
) -> np.ndarray:
    """The ``q`` quantile (nearest rank) of ``values`` per ``window`` of ``times``; NaN if empty."""
    count = max(1, int(np.ceil(duration / window)))
    group = np.minimum((times // window).astype(np.int64), count - 1)
    order = np.lexsort((values, group))
    group, values = group[order], values[order]
    edges = np.arange(count)
    starts = np.searchsorted(group, edges, "left")
    sizes = np.searchsorted(group, edges, "right") - starts
    picks = starts + np.floor(q * np.maximum(sizes - 1, 0)).astype(np.int64)
    return np.where(sizes > 0, values[np.minimum(picks, values.size - 1)], np.nan)


def plot(
    path: str | Path,
    title: str,
    rates: np.ndarray,
    outcomes: dict[str, Outcome],
    slo: float,
) -> None:
    """Load, instances and p99 latency (refusals count as too slow) over time, per policy."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    figure = Figure(figsize=(9, 7), layout="constrained")
    load, pool, latency = figure.subplots(3, 1, sharex=True)
    load.plot(np.arange(rates.size), rates, color="black", linewidth=0.8)
    load.set_ylabel("arrival rate (req/s)")
    load.set_title(title)
    ceiling = slo * 20
    window = max(1.0, float(rates.size) / PLOT_POINTS)
    for name, outcome in outcomes.items():
        line = timeline_line(outcome)
        (drawn,) = pool.plot(line[0], line[1], drawstyle="steps-post", linewidth=1, label=name)
        times = np.concatenate([outcome.accepted, outcome.refused])
        values = np.concatenate([outcome.latency, np.full(outcome.refused.size, np.inf)])
        if times.size:
            p99 = windowed_quantile(times, values, window, outcome.duration, 0.99)
            centres = (np.arange(p99.size) + 0.5) * window
            latency.plot(
                centres, np.minimum(p99, ceiling) * 1000, color=drawn.get_color(), linewidth=0.8
            )
    pool.set_ylabel("instances (ready + starting)")
    pool.legend(loc="upper left", fontsize="small", ncol=3)
    latency.axhline(slo * 1000, color="red", linestyle="--", linewidth=0.8, label="SLO")
    latency.set_yscale("log")
    latency.set_ylabel(f"p99 per {window:.0f} s (ms)")
    latency.set_xlabel("seconds")
    latency.legend(loc="upper left", fontsize="small")
    figure.savefig(path, dpi=72)


def timeline_line(outcome: Outcome) -> tuple[np.ndarray, np.ndarray]:
    line = outcome.timeline
    return line.time, line.ready + line.starting
