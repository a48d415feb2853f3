"""Figures from a load test: the terminal table, the ``--json`` object and the ``--plot`` image.

Latency figures cover successful (2xx) requests only: a refused request answers fast and would
flatter them; refusals show up in ``errors`` instead. Throughput is successful requests per second
of the measured window.

``Report.to_dict()`` (the ``dlproxy bench --json OUT`` object) has these keys:

- ``kind``: ``"http"``.
- ``url``, ``target`` (the URL posted to), ``model``, ``protocol`` (``kserve`` | ``openai``).
- ``mode``: ``closed`` or ``open``; ``concurrency`` (closed loop, else null); ``rate`` (open loop:
  the Poisson arrival rate asked for, req/s, else null).
- ``inputs`` (e.g. ``unique``, ``zipf:1.1:1000``, ``file:PATH``), ``items_per_request``, ``seed``.
- ``warmup_s``, ``duration_s``: the uncounted warm-up and the measured window, seconds.
- ``requests``: requests started in the window and answered (any status, connection errors too);
  ``ok``: the 2xx ones; ``errors``: the rest; ``error_rate``: ``errors / requests``.
- ``offered``: open loop, arrivals scheduled in the window (0 in closed loop); ``dropped``: those
  not sent because ``max_outstanding`` requests were already in flight (client-side drops).
- ``throughput_rps``: ``ok / duration_s``; ``request_rate``: ``requests / duration_s``;
  ``items_per_s``: ``ok * items_per_request / duration_s``.
- ``latency_ms``: ``mean``, ``p50``, ``p90``, ``p99``, ``p99_9``, ``max`` of successful requests
- ``refusal_latency_ms``: the same figures for requests refused with 429 or 503 (how fast a
  refusal comes back)
  (numpy linear-interpolated percentiles; null when there were none).
- ``errors_by_status``: ``{"503": n, "0:ClientConnectorError": m, ...}``; status 0 means no HTTP
  answer (connection error or client timeout), followed by the exception class name.
- ``instances``: ``X-Dlproxy-Instance`` value -> responses; ``cache``: ``X-Dlproxy-Cache`` value ->
  responses; ``cache_hit_ratio``: share of responses with a cache header other than ``miss`` (null
  without cache headers).
- ``throughput_per_s``: successful requests completed in each whole second of the window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from dlproxy.bench.loadgen import Recording

PERCENTILES: dict[str, float] = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99_9": 99.9}


def latency_ms(latency_s: np.ndarray) -> dict[str, float | None]:
    """Mean, percentiles and max in milliseconds; all ``None`` for no samples."""
    keys = ["mean", *PERCENTILES, "max"]
    if latency_s.size == 0:
        return dict.fromkeys(keys)
    ms = latency_s * 1000.0
    points = np.percentile(ms, list(PERCENTILES.values()))
    values = [float(ms.mean()), *(float(p) for p in points), float(ms.max())]
    return {key: round(value, 3) for key, value in zip(keys, values, strict=True)}


def per_second(end_s: np.ndarray, seconds: float) -> list[int]:
    """How many of the events at ``end_s`` fall in each whole second ``[0, ceil(seconds))``."""
    bins = max(1, math.ceil(seconds))
    inside = end_s[(end_s >= 0) & (end_s < bins)]
    counts: list[int] = np.bincount(inside.astype(np.int64), minlength=bins).tolist()
    return counts


@dataclass(frozen=True, slots=True)
class Report:
    """A finished load test, summarised on demand."""

    recording: Recording

    @property
    def ok_mask(self) -> np.ndarray:
        status = self.recording.status
        return (status >= 200) & (status < 300)

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` object (keys in the module docstring)."""
        rec, spec = self.recording, self.recording.spec
        ok_mask = self.ok_mask
        requests, ok = int(rec.status.size), int(ok_mask.sum())
        duration = spec.duration
        cache_total = sum(rec.cache.values())
        hits = cache_total - rec.cache.get("miss", 0)
        end_s = (rec.start_s + rec.latency_s)[ok_mask]
        return {
            "kind": "http",
            "url": spec.url,
            "target": spec.target,
            "model": spec.model,
            "protocol": spec.protocol,
            "mode": spec.mode,
            "concurrency": spec.concurrency if spec.rate is None else None,
            "rate": spec.rate,
            "inputs": rec.inputs,
            "items_per_request": spec.items,
            "seed": spec.seed,
            "warmup_s": spec.warmup,
            "duration_s": duration,
            "requests": requests,
            "ok": ok,
            "errors": requests - ok,
            "error_rate": round((requests - ok) / requests, 6) if requests else 0.0,
            "offered": rec.offered,
            "dropped": rec.dropped,
            "throughput_rps": round(ok / duration, 3),
            "request_rate": round(requests / duration, 3),
            "items_per_s": round(ok * spec.items / duration, 3),
            "latency_ms": latency_ms(rec.latency_s[ok_mask]),
            "refusal_latency_ms": latency_ms(
                rec.latency_s[(rec.status == 429) | (rec.status == 503)]
            ),
            "errors_by_status": dict(sorted(rec.errors.items())),
            "instances": dict(sorted(rec.instances.items())),
            "cache": dict(sorted(rec.cache.items())),
            "cache_hit_ratio": round(hits / cache_total, 6) if cache_total else None,
            "throughput_per_s": per_second(end_s, duration),
        }

    def table(self) -> Table:
        """A rich table for the terminal."""
        data = self.to_dict()
        load = (
            f"{data['concurrency']} concurrent (closed loop)"
            if data["mode"] == "closed"
            else f"{data['rate']:g} req/s Poisson (open loop)"
        )
        table = Table(
            title=f"dlproxy bench: {data['model']} at {data['target']}", show_header=False
        )
        table.add_column("", style="bold")
        table.add_column("")
        table.add_row("load", f"{load}, {data['protocol']}, inputs {data['inputs']}")
        table.add_row(
            "window", f"{data['duration_s']:g} s measured after {data['warmup_s']:g} s warm-up"
        )
        table.add_row("requests", f"{data['requests']} ({data['ok']} ok, {data['errors']} errors)")
        if data["mode"] == "open":
            table.add_row("offered", f"{data['offered']} ({data['dropped']} dropped by the client)")
        table.add_row("throughput", f"{data['throughput_rps']:.1f} req/s")
        table.add_row(
            "items", f"{data['items_per_s']:.1f} items/s ({data['items_per_request']}/req)"
        )
        lat = data["latency_ms"]
        if lat["p50"] is not None:
            figures = ", ".join(f"{k.replace('_', '.')} {v:.2f}" for k, v in lat.items())
            table.add_row("latency ms", figures)
        table.add_row("errors", _counts(data["errors_by_status"]))
        table.add_row("instances", _counts(data["instances"]))
        ratio = data["cache_hit_ratio"]
        hit = "" if ratio is None else f" (hit ratio {ratio:.1%})"
        table.add_row("cache", _counts(data["cache"]) + hit)
        return table

    def plot(self, path: str | Path) -> None:
        """Latency over time (each request, with per-second p50/p99) and throughput per second."""
        from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

        rec, ok_mask = self.recording, self.ok_mask
        end_s = rec.start_s + rec.latency_s
        lat_ms = rec.latency_s * 1000.0
        figure = Figure(figsize=(10, 7), layout="constrained")
        top, bottom = figure.subplots(2, 1, sharex=True)
        step = max(1, int(ok_mask.sum()) // 100_000)  # keep the scatter drawable
        top.scatter(end_s[ok_mask][::step], lat_ms[ok_mask][::step], s=2, alpha=0.3, label="ok")
        if (~ok_mask).any():
            top.scatter(end_s[~ok_mask], lat_ms[~ok_mask], s=4, c="red", label="error")
        seconds = np.arange(max(1, math.ceil(rec.spec.duration)))
        second_of = np.floor(end_s)
        lines: dict[int, list[float]] = {50: [], 99: []}
        for t in seconds:
            in_second = lat_ms[ok_mask & (second_of == t)]
            for q, line in lines.items():
                line.append(float(np.percentile(in_second, q)) if in_second.size else np.nan)
        for (q, line), style in zip(lines.items(), ("-", "--"), strict=True):
            top.plot(
                seconds + 0.5,
                line,
                style,
                color="black",
                drawstyle="steps-mid",
                label=f"p{q} per second",
            )
        top.set_ylabel("latency (ms)")
        top.set_yscale("log")
        top.legend(loc="upper right")
        top.set_title(f"{rec.spec.model}: {rec.spec.mode} loop, {rec.inputs}")
        good = per_second(end_s[ok_mask], rec.spec.duration)
        bad = per_second(end_s[~ok_mask], rec.spec.duration)
        bottom.bar(seconds + 0.5, good, width=0.9, label="ok")
        bottom.bar(seconds + 0.5, bad, width=0.9, bottom=good, color="red", label="errors")
        bottom.set_xlabel("seconds into the measured window")
        bottom.set_ylabel("requests per second")
        bottom.legend(loc="lower right")
        figure.savefig(path, dpi=100)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{key}: {value}" for key, value in counts.items()) or "-"
