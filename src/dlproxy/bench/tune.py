"""``dlproxy tune``: find the serving configuration with the most throughput that meets an SLO.

``dlproxy tune --model M --slo-ms X [--instances 1,2] [--max-batch 8,16,32] [--max-delay-ms 1,4]
[--concurrency 32 | --rate R] [--duration S] [--out tuned.toml] [--json OUT]`` starts one
``dlproxy serve`` per combination (instances x max batch x max delay; threads per instance from the
cores unless ``--threads``), loads it with the bench load generator from this process, and stops it.
The model is measured as it is served, tokenizer, gateway and IPC included, under the load the SLO is
stated for. The winner is the combination with the highest throughput whose p99 is within the SLO
and that answered every request; it is written as a settings file that ``dlproxy serve --config``
loads. With the defaults a sweep takes a few minutes (12 combinations of about 10 s each).

Inputs are unique sentences (``text``, BYTES): every request is a miss for any cache.

``--json OUT`` keys: ``kind`` (``"tune"``), ``model``, ``slo_ms``, ``mode`` (``closed``/``open``),
``concurrency``, ``rate``, ``duration_s``, ``trials`` (one object per combination: ``instances``,
``threads``, ``max_batch``, ``max_delay_ms``, ``throughput_rps``, ``p50_ms``, ``p99_ms``,
``requests``, ``errors``, ``meets_slo``, ``failure`` (why the server did not start, else null)),
``recommended`` (the winning trial or null) and ``config`` (the file written, or null).

Exit status: 0 with a recommendation, 1 when no combination met the SLO, 2 for invalid arguments,
130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from dlproxy.bench import loadgen
from dlproxy.bench.inputs import UniqueInputs
from dlproxy.bench.report import Report
from dlproxy.console import Bar, free_port
from dlproxy.models.registry import model_name
from dlproxy.settings import usable_cores

READY_TIMEOUT_S = 300.0  # the first start of a model may export it
STOP_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class Candidate:
    """One serving configuration of the sweep."""

    instances: int
    threads: int
    max_batch: int
    max_delay_ms: float


@dataclass(frozen=True, slots=True)
class Trial:
    """A candidate and what it served under the load."""

    instances: int
    threads: int
    max_batch: int
    max_delay_ms: float
    throughput_rps: float
    p50_ms: float | None
    p99_ms: float | None
    requests: int
    errors: int
    meets_slo: bool
    failure: str | None = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``tune`` flags, added to the parser the main CLI gives us."""
    parser.add_argument("--model", required=True, metavar="NAME[:VARIANT]", help="model to tune")
    parser.add_argument("--slo-ms", type=float, required=True, help="p99 latency objective (ms)")
    parser.add_argument("--instances", default=None, metavar="N1,N2", help="default 1..cores")
    parser.add_argument("--threads", type=int, help="threads per worker (default cores/instances)")
    parser.add_argument("--max-batch", default="8,16,32", metavar="B1,B2", help="default 8,16,32")
    parser.add_argument("--max-delay-ms", default="1,4", metavar="D1,D2", help="default 1,4")
    load = parser.add_mutually_exclusive_group()
    load.add_argument("--concurrency", type=int, default=32, help="closed-loop clients (32)")
    load.add_argument("--rate", type=float, help="open loop: Poisson arrivals at R requests/s")
    parser.add_argument("--duration", type=float, default=5.0, metavar="S", help="measured s (5)")
    parser.add_argument("--warmup", type=float, default=1.0, metavar="S", help="uncounted s (1)")
    parser.add_argument("--out", type=Path, default=Path("tuned.toml"), help="config to write")
    parser.add_argument("--json", metavar="OUT", help="write the results as one JSON object")
    parser.add_argument("--seed", type=int, default=0, help="input and arrival seed")


def run(args: argparse.Namespace) -> int:
    """Run ``dlproxy tune`` as ``args`` say; returns the exit status."""
    console, errors = Console(), Console(stderr=True)
    try:
        candidates = _candidates(args)
        if args.slo_ms <= 0 or args.duration <= 0 or args.warmup < 0:
            raise ValueError("--slo-ms and --duration must be > 0, --warmup >= 0")
    except ValueError as exc:
        errors.print(f"[red]dlproxy tune: {exc}[/red]")
        return 2
    trials: list[Trial] = []
    try:
        _sweep(args, candidates, trials)
    except KeyboardInterrupt:
        errors.print("[yellow]dlproxy tune: interrupted[/yellow]")
        return 130
    best = recommend(trials)
    console.print(_table(args, trials, best))
    for t in trials:
        if t.failure:
            errors.print(f"[red]{t.instances} instance(s), batch {t.max_batch}: {t.failure}[/red]")
    config: Path | None = None
    if best is None:
        errors.print(f"[red]no configuration met p99 <= {args.slo_ms:g} ms without errors[/red]")
    else:
        config = args.out
        write_config(config, args.model, best, args.slo_ms)
        console.print(
            f"recommended: {best.instances} instance(s) x {best.threads} thread(s), max batch "
            f"{best.max_batch}, max delay {best.max_delay_ms:g} ms: {best.throughput_rps:.0f} "
            f"req/s, p99 {best.p99_ms:.1f} ms; written to {config} "
            f"(dlproxy serve --config {config})"
        )
    if args.json:
        data = {
            "kind": "tune",
            "model": args.model,
            "slo_ms": args.slo_ms,
            "mode": "closed" if args.rate is None else "open",
            "concurrency": args.concurrency if args.rate is None else None,
            "rate": args.rate,
            "duration_s": args.duration,
            "trials": [asdict(t) for t in trials],
            "recommended": asdict(best) if best is not None else None,
            "config": str(config) if config is not None else None,
        }
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return 0 if best is not None else 1


def _numbers(text: str, kind: type[int] | type[float], flag: str) -> list[Any]:
    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"{flag} takes comma-separated numbers, got {text!r}") from None
    if not values or min(values) <= 0:
        raise ValueError(f"{flag} needs positive numbers, got {text!r}")
    return values


def _candidates(args: argparse.Namespace) -> list[Candidate]:
    """Every combination of the swept values, in sweep order."""
    cores = usable_cores()
    instances = (
        _numbers(args.instances, int, "--instances")
        if args.instances
        else list(range(1, min(cores, 8) + 1))
    )
    batches = _numbers(args.max_batch, int, "--max-batch")
    delays = _numbers(args.max_delay_ms, float, "--max-delay-ms")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    return [
        Candidate(n, args.threads or max(1, cores // n), b, d)
        for n, b, d in itertools.product(instances, batches, delays)
    ]


def recommend(trials: list[Trial]) -> Trial | None:
    """The highest-throughput trial that met the SLO and answered every request."""
    good = [t for t in trials if t.meets_slo]
    return max(good, key=lambda t: t.throughput_rps, default=None)


def write_config(path: Path, model: str, trial: Trial, slo_ms: float) -> None:
    """A TOML settings file (keys as ``Settings`` fields) for ``dlproxy serve --config``."""
    lines = [
        f"# Written by dlproxy tune: {trial.throughput_rps:.0f} req/s, p50 {trial.p50_ms} ms,",
        f"# p99 {trial.p99_ms} ms (SLO {slo_ms:g} ms), measured on this machine.",
        f"models = [{json.dumps(model)}]",
        f"instances = {trial.instances}",
        f"threads = {trial.threads}",
        'batching = "fixed"',
        f"max_batch = {trial.max_batch}",
        f"max_delay_ms = {float(trial.max_delay_ms)}",
        f"slo_ms = {float(slo_ms)}",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _sweep(args: argparse.Namespace, candidates: list[Candidate], trials: list[Trial]) -> None:
    """Serve and load each candidate in turn, with a progress bar over the sweep (on stderr)."""
    columns = ("bar", "{task.completed:.0f}/{task.total:.0f}", "elapsed", "{task.fields[status]}")
    with Bar("tuning", len(candidates), columns=columns, status="") as bar:
        for candidate in candidates:
            c = candidate
            label = f"{c.instances}x{c.threads}t batch {c.max_batch} delay {c.max_delay_ms:g} ms"
            bar.update(status=f"{label}: starting")

            def report(state: str, label: str = label) -> None:
                bar.update(status=f"{label}: {state}")

            trial = measure(args, candidate, report)
            trials.append(trial)
            bar.update(advance=1, status=f"{label}: {trial.throughput_rps:.0f} req/s")


def measure(
    args: argparse.Namespace, candidate: Candidate, status: Callable[[str], None] = print
) -> Trial:
    """Serve ``candidate`` in a subprocess, load it, stop it by its PID."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        *(sys.executable, "-m", "dlproxy", "serve", "--port", str(port)),
        *("--model", args.model, "--instances", str(candidate.instances)),
        *("--threads", str(candidate.threads), "--max-batch", str(candidate.max_batch)),
        *("--max-delay-ms", str(candidate.max_delay_ms), "--log-level", "warning"),
    ]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            failure = _wait_ready(url, process)
            if failure is None:
                status("warm-up")
                report = _load(args, url, status)
        finally:
            _stop(process)
        if failure is not None:
            log.seek(0)
            tail = log.read().decode(errors="replace").strip().splitlines()[-3:]
            return _failed(candidate, failure + (": " + " | ".join(tail) if tail else ""))
    latency = report["latency_ms"]
    p99 = latency["p99"]
    meets = report["ok"] > 0 and report["errors"] == 0 and p99 is not None and p99 <= args.slo_ms
    return Trial(
        **asdict(candidate),
        throughput_rps=report["throughput_rps"],
        p50_ms=latency["p50"],
        p99_ms=p99,
        requests=report["requests"],
        errors=report["errors"],
        meets_slo=meets,
    )


def _failed(candidate: Candidate, failure: str) -> Trial:
    return Trial(
        **asdict(candidate),
        throughput_rps=0.0,
        p50_ms=None,
        p99_ms=None,
        requests=0,
        errors=0,
        meets_slo=False,
        failure=failure,
    )


def _load(args: argparse.Namespace, url: str, status: Callable[[str], None]) -> dict[str, Any]:
    """One load test from this process (on uvloop when installed); the bench report's figures."""
    spec = loadgen.LoadSpec(
        url=url,
        model=model_name(args.model),
        concurrency=args.concurrency,
        rate=args.rate,
        duration=args.duration,
        warmup=args.warmup,
        seed=args.seed,
    )
    with asyncio.Runner(loop_factory=loadgen.event_loop_factory()) as runner:
        recording = runner.run(
            loadgen.run_load(
                spec,
                UniqueInputs(args.seed),
                lambda p: status(
                    f"{'warm-up' if p.warming_up else 'measuring'} {p.elapsed:.0f}/{p.total:.0f} s,"
                    f" {p.rate:.0f} req/s, {p.errors} errors"
                ),
            )
        )
    return Report(recording).to_dict()


def _wait_ready(url: str, process: subprocess.Popen[bytes]) -> str | None:
    """None once ``/v2/health/ready`` answers 200; else why the server never got there."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return f"dlproxy serve exited with code {process.returncode}"
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=1) as response:
                if response.status == 200:
                    return None
        except OSError:
            pass
        time.sleep(0.1)
    return f"dlproxy serve was not ready after {READY_TIMEOUT_S:.0f} s"


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the server drains and stops its workers), SIGKILL if it does not end in time."""
    if process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _table(args: argparse.Namespace, trials: list[Trial], best: Trial | None) -> Table:
    load = f"{args.concurrency} clients" if args.rate is None else f"{args.rate:g} req/s offered"
    table = Table(title=f"dlproxy tune {args.model}: p99 SLO {args.slo_ms:g} ms, {load}")
    for name in (
        "instances",
        "threads",
        "batch",
        "delay ms",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "SLO met",
    ):
        table.add_column(name, justify="right")
    for t in trials:
        ms = [f"{v:.1f}" if v is not None else "-" for v in (t.p50_ms, t.p99_ms)]
        verdict = "yes" if t.meets_slo else ("failed" if t.failure else "no")
        table.add_row(
            str(t.instances),
            str(t.threads),
            str(t.max_batch),
            f"{t.max_delay_ms:g}",
            f"{t.throughput_rps:.0f}",
            *ms,
            str(t.errors),
            verdict,
            style="bold green" if t is best else None,
        )
    return table
