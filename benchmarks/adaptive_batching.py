"""Adaptive (AIMD) batching against fixed batch limits at low, medium and high load, in one sitting.

    PYTHONPATH=src .venv/bin/python benchmarks/adaptive_batching.py [--slo-ms 50] [--duration 10]
        [--rounds 2] [--json adaptive_batching.json]

1. Capacity: a short closed-loop run (32 clients) against fixed max batch 32, the setting with the
   most throughput on this machine.
2. One server per setting (fixed max batch 1, 8, 32; adaptive with cap 32 and the SLO; each
   minilm int8, 2 instances x 1 thread), all started first. Each is loaded open loop (Poisson
   arrivals, the same schedule for every setting) at 20%, 50% and 85% of that capacity, each run
   with a warm-up that is not counted; the settings take turns, ``--rounds`` times per load, so a
   noisy spell on the machine hits all of them rather than one. Percentiles are over all rounds.
3. A markdown table of throughput, p99 and mean batch size per (setting, load), whether each meets
   the SLO (p99 <= SLO, no errors, no client drops), and per load the verdict the issue asks for:
   adaptive meets the SLO with throughput >= the best fixed setting that meets it.

Every server is started here on a free port and stopped by its PID; load goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from dlproxy.bench import loadgen
from dlproxy.bench.inputs import UniqueInputs
from dlproxy.bench.report import Report, latency_ms

sys.path.insert(0, str(Path(__file__).parent))
from harness import Serving

LOADS = {"low": 0.2, "medium": 0.5, "high": 0.85}
FIXED = (1, 8, 32)


def load(
    url: str,
    duration: float,
    warmup: float,
    seed: int,
    rate: float | None = None,
    concurrency: int = 32,
) -> loadgen.Recording:
    spec = loadgen.LoadSpec(
        url=url,
        model="minilm",
        concurrency=concurrency,
        rate=rate,
        duration=duration,
        warmup=warmup,
        seed=seed,
    )
    with asyncio.Runner(loop_factory=loadgen.event_loop_factory()) as runner:
        return runner.run(loadgen.run_load(spec, UniqueInputs(seed)))


def combined(recordings: list[loadgen.Recording], batch_size_mean: float) -> dict[str, Any]:
    """One (setting, load) cell over its rounds: percentiles over every successful request."""
    reports = [Report(r).to_dict() for r in recordings]
    ok = np.concatenate([r.latency_s[Report(r).ok_mask] for r in recordings])
    seconds = sum(r.spec.duration for r in recordings)
    return {
        "throughput_rps": round(sum(r["ok"] for r in reports) / seconds, 3),
        "offered": sum(r["offered"] for r in reports),
        "errors": sum(r["errors"] for r in reports),
        "dropped": sum(r["dropped"] for r in reports),
        "latency_ms": latency_ms(ok),
        "p99_ms_per_round": [r["latency_ms"]["p99"] for r in reports],
        "batch_size_mean": round(batch_size_mean, 3),
    }


def serve_args(reference: str, setting: str, slo_ms: float) -> list[str]:
    common = ["--model", reference, "--instances", "2", "--threads", "1"]
    if setting == "adaptive":
        return [*common, "--max-batch", "32", "--batching", "adaptive", "--slo-ms", str(slo_ms)]
    return [*common, "--max-batch", setting.removeprefix("fixed ")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", default="int8")
    parser.add_argument("--slo-ms", type=float, default=50.0)
    parser.add_argument("--duration", type=float, default=10.0, help="measured s per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--capacity-duration", type=float, default=10.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    reference = f"minilm:{args.variant}"
    settings = [f"fixed {b}" for b in FIXED] + ["adaptive"]
    with contextlib.ExitStack() as stack:
        servers = {
            s: stack.enter_context(Serving(*serve_args(reference, s, args.slo_ms)))
            for s in settings
        }
        capacity = Report(load(servers["fixed 32"].url, args.capacity_duration, 3.0, seed=1))
        peak = capacity.to_dict()["throughput_rps"]
        print(f"capacity (32 clients, fixed 32): {peak:.0f} req/s", file=sys.stderr)
        results: dict[str, Any] = {
            "slo_ms": args.slo_ms,
            "capacity": capacity.to_dict(),
            "rounds": args.rounds,
            "runs": {},
        }
        for seed, (name, share) in enumerate(LOADS.items(), start=10):
            recordings: dict[str, list[loadgen.Recording]] = {s: [] for s in settings}
            batches = {s: [0, 0] for s in settings}
            for round_ in range(args.rounds):
                for setting in settings:  # interleaved: a noisy minute hits every setting alike
                    server = servers[setting]
                    before = server.batches()
                    recording = load(
                        server.url, args.duration, args.warmup, seed + 100 * round_, share * peak
                    )
                    after = server.batches()
                    batches[setting][0] += after[0] - before[0]
                    batches[setting][1] += after[1] - before[1]
                    recordings[setting].append(recording)
                    p99 = Report(recording).to_dict()["latency_ms"]["p99"]
                    print(f"{setting:>9} {name:>6} round {round_}: p99 {p99} ms", file=sys.stderr)
            for setting in settings:
                n, items = batches[setting]
                cell = combined(recordings[setting], items / n if n else 0.0)
                results["runs"][f"{setting}/{name}"] = cell
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(table(results, settings, args.slo_ms))


def meets(run: dict[str, Any], slo_ms: float) -> bool:
    p99 = run["latency_ms"]["p99"]
    return bool(run["errors"] == 0 and run["dropped"] == 0 and p99 is not None and p99 <= slo_ms)


def table(results: dict[str, Any], settings: list[str], slo_ms: float) -> str:
    peak = results["capacity"]["throughput_rps"]
    runs = results["runs"]
    header = " | ".join(
        f"{name} ({share:.0%}: {share * peak:.0f} req/s)" for name, share in LOADS.items()
    )
    rows = [
        f"| setting | {header} |",
        "| --- |" + " ---: |" * len(LOADS),
    ]
    for setting in settings:
        cells = []
        for name in LOADS:
            run = runs[f"{setting}/{name}"]
            mark = "meets" if meets(run, slo_ms) else "**misses**"
            cells.append(
                f"{run['throughput_rps']:.0f} req/s, p99 {run['latency_ms']['p99']:.1f} ms, "
                f"batch {run['batch_size_mean']:.1f}, {mark}"
            )
        rows.append(f"| {setting} | " + " | ".join(cells) + " |")
    verdicts = []
    for name in LOADS:
        adaptive = runs[f"adaptive/{name}"]
        fixed_ok = [s for s in settings[:-1] if meets(runs[f"{s}/{name}"], slo_ms)]
        best = max(fixed_ok, key=lambda s: runs[f"{s}/{name}"]["throughput_rps"], default=None)
        best_rps = runs[f"{best}/{name}"]["throughput_rps"] if best else 0.0
        ok = meets(adaptive, slo_ms) and adaptive["throughput_rps"] >= best_rps
        verdicts.append(
            f"{'met' if ok else '**not met**'} (best fixed meeting the SLO: "
            f"{best or 'none'}{f', {best_rps:.0f} req/s' if best else ''})"
        )
    rows.append("| adaptive >= best fixed within SLO | " + " | ".join(verdicts) + " |")
    return (
        f"Capacity (closed loop, 32 clients, fixed 32): {peak:.0f} req/s; SLO p99 <= {slo_ms:g} ms."
        "\n\n" + "\n".join(rows)
    )


if __name__ == "__main__":
    main()
