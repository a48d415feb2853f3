"""``dlproxy bench``: load a running server over HTTP, or (``--offline``) time the model alone.

``dlproxy bench URL --model M [--concurrency N | --rate R] ...`` runs the load generator
(``loadgen.py``) with a live progress bar on stderr, prints a table and optionally writes
``--json OUT`` (keys documented in ``report.py``) and ``--plot OUT.png``.
``dlproxy bench --offline MODEL[:VARIANT] [--threads N]`` measures the model in this process at each
batch size (``offline.py``): the ceiling that served throughput is compared against.

Exit status: 0 on success, 1 when no request succeeded, 2 for invalid arguments, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.table import Table

from dlproxy.bench import loadgen
from dlproxy.bench.inputs import InputSource, parse_inputs
from dlproxy.bench.report import Report

DEFAULT_CONCURRENCY = 32  # the client count the peer comparisons in ARCHITECTURE.md were made at


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``bench`` flags, added to the parser the main CLI gives us."""
    parser.add_argument("url", nargs="?", help="server base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--model", help="model name to load (required unless --offline)")
    load = parser.add_mutually_exclusive_group()
    load.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        help=f"closed loop: N clients sending back to back (default {DEFAULT_CONCURRENCY})",
    )
    load.add_argument(
        "--rate", type=float, metavar="R", help="open loop: Poisson arrivals at R requests/s"
    )
    parser.add_argument("--duration", type=float, default=10.0, metavar="S", help="measured s")
    parser.add_argument(
        "--warmup", type=float, default=2.0, metavar="S", help="uncounted seconds first (2)"
    )
    parser.add_argument(
        "--inputs",
        default="unique",
        metavar="unique|zipf:S[:K]|file:PATH",
        help="sentences: all distinct, Zipf(S) over K (1000) sentences, or a file's lines",
    )
    parser.add_argument("--protocol", choices=loadgen.PROTOCOLS, default="kserve")
    parser.add_argument("--items", type=int, default=1, metavar="K", help="sentences per request")
    parser.add_argument(
        "--input-name", default="text", help="KServe input tensor name (BYTES); default text"
    )
    parser.add_argument(
        "--item-shape",
        default="",
        metavar="D[,D...]",
        help="each item's dimensions after the batch axis: 1 sends [N, 1] (Triton's batched "
        "BYTES inputs); default none: [N]",
    )
    parser.add_argument("--timeout", type=float, default=30.0, metavar="S", help="per request")
    parser.add_argument(
        "--max-outstanding",
        type=int,
        default=10_000,
        metavar="N",
        help="open loop: in-flight cap; arrivals beyond it are client-side drops",
    )
    parser.add_argument(
        "--seed", type=int, metavar="N", help="input/arrival seed (default: random, reported)"
    )
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME:VALUE",
        help="a header sent with every request (repeatable), e.g. X-Priority:9",
    )
    parser.add_argument("--json", metavar="OUT", help="write the results as one JSON object")
    parser.add_argument("--plot", metavar="OUT.png", help="latency and throughput over time")
    parser.add_argument(
        "--offline",
        metavar="MODEL[:VARIANT]",
        help="time the model alone in this process at each batch size (no server, no URL)",
    )
    parser.add_argument("--threads", type=int, metavar="N", help="--offline: intra-op threads")


def run(args: argparse.Namespace) -> int:
    """Run ``dlproxy bench`` as ``args`` say; returns the exit status."""
    console = Console()
    errors = Console(stderr=True)
    if args.offline:
        return _run_offline(args, console)
    try:
        spec, source = _load_spec(args)
    except (ValueError, OSError) as exc:
        errors.print(f"[red]dlproxy bench: {exc}[/red]")
        return 2
    try:
        recording = _run_with_progress(spec, source, errors)
    except KeyboardInterrupt:
        errors.print("[yellow]dlproxy bench: interrupted[/yellow]")
        return 130
    report = Report(recording)
    console.print(report.table())
    data = report.to_dict()
    if args.json:
        _write_json(args.json, data)
    if args.plot:
        report.plot(args.plot)
    return 0 if data["ok"] else 1


def _load_spec(args: argparse.Namespace) -> tuple[loadgen.LoadSpec, InputSource]:
    """Check the arguments that argparse cannot, and build the spec and the input source."""
    if not args.url:
        raise ValueError("a server URL is required (or use --offline MODEL)")
    if not args.url.startswith(("http://", "https://")):
        raise ValueError(f"URL must start with http:// or https://, got {args.url!r}")
    if not args.model:
        raise ValueError("--model is required")
    seed = args.seed if args.seed is not None else secrets.randbelow(2**20)
    spec = loadgen.LoadSpec(
        url=args.url,
        model=args.model,
        protocol=args.protocol,
        concurrency=DEFAULT_CONCURRENCY if args.concurrency is None else args.concurrency,
        rate=args.rate,
        duration=args.duration,
        warmup=args.warmup,
        items=args.items,
        input_name=args.input_name,
        item_shape=_dimensions(args.item_shape),
        timeout=args.timeout,
        max_outstanding=args.max_outstanding,
        seed=seed,
        headers=tuple(_header(text) for text in args.header),
    )
    return spec, parse_inputs(args.inputs, seed)


def _run_with_progress(
    spec: loadgen.LoadSpec, source: InputSource, console: Console
) -> loadgen.Recording:
    """The load test on uvloop (when installed), with a progress bar redrawn 4 times a second."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:.0f}/{task.total:.0f} s"),
        TextColumn("{task.fields[rate]:>8.0f} req/s"),
        TextColumn("{task.fields[errors]} errors"),
    )
    with Progress(*columns, console=console, auto_refresh=False) as bar:
        task: TaskID = bar.add_task("warm-up", total=spec.warmup + spec.duration, rate=0, errors=0)

        def show(progress: loadgen.Progress) -> None:
            bar.update(
                task,
                completed=progress.elapsed,
                description="warm-up" if progress.warming_up else "measuring",
                rate=progress.rate,
                errors=progress.errors,
            )
            bar.refresh()

        with asyncio.Runner(loop_factory=loadgen.event_loop_factory()) as runner:
            return runner.run(loadgen.run_load(spec, source, show))


def _run_offline(args: argparse.Namespace, console: Console) -> int:
    """``--offline``: the model alone at each batch size, via ``offline.measure_offline``."""
    from dlproxy.bench.offline import measure_offline  # loads model runtimes: only when asked

    options = {} if args.threads is None else {"threads": args.threads}
    result = measure_offline(args.offline, **options)
    data = result.to_dict()
    table = Table(title=f"dlproxy bench --offline {args.offline}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    for key, value in data.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {v}" for k, v in value.items())
        table.add_row(key, str(value))
    console.print(table)
    if args.json:
        _write_json(args.json, data)
    return 0


def _write_json(path: str, data: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":  # manual use before the main CLI wires the subcommand in
    _parser = argparse.ArgumentParser(prog="dlproxy bench")
    add_arguments(_parser)
    sys.exit(run(_parser.parse_args()))


def _header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        raise ValueError(f"--header takes NAME:VALUE, got {text!r}")
    return name.strip(), value.strip()


def _dimensions(text: str) -> tuple[int, ...]:
    if not text.strip():
        return ()
    try:
        dims = tuple(int(part) for part in text.split(","))
    except ValueError:
        dims = ()
    if not dims or min(dims) < 1:
        raise ValueError(f"--item-shape takes positive integers like 1 or 2,3, got {text!r}")
    return dims
