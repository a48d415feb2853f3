"""``dlproxy simulate``: scaling policies against a load trace, on a virtual clock, in seconds.

``dlproxy simulate --trace step|bursty|diurnal|file:CSV [--policy NAME|all] [--slo-ms X]
[--duration S] [--seed N] [--profile OFFLINE.json] [--plot OUT.png] [--json OUT]`` runs each
policy (the real objects from ``dlproxy.autoscaling``) through the controller's limits against
modelled instances (``engine.py``), then the two static baselines (``scenario.py``), and prints one
table. ``--option KEY=VALUE`` passes constructor options to a single ``--policy``; the ``cost``
policy gets the run's SLO and cost per hour unless told otherwise.

``--json OUT`` writes one object: ``trace``, ``duration_s``, ``seed``, ``slo_ms``,
``startup_s``, ``profile`` (its source), ``limits`` (min/max instances, cooldowns, steps),
``static_peak_instances``, ``static_mean_instances``, ``cost_per_hour``, and ``rows``: one per run
with ``policy``, ``requests``, ``refused``, ``violations``, ``violation_pct`` (refused or slower
than the SLO, % of requests), ``instance_seconds``, ``cost``, ``mean_instances``,
``max_instances``, ``p50_ms``, ``p99_ms`` (answered requests) and ``vs_static_peak``
(instance-seconds over the static-at-peak row's).

Exit status: 0 on success, 2 for invalid arguments, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import inspect
import json
from pathlib import Path
from typing import Any

from rich.console import Console

from dlproxy.autoscaling.base import POLICIES
from dlproxy.autoscaling.limits import Limits
from dlproxy.console import Bar
from dlproxy.plugins import import_from_string
from dlproxy.simulate import report
from dlproxy.simulate.engine import Outcome
from dlproxy.simulate.model import DEFAULT_STARTUP, InstanceModel, default_profile, load_profile
from dlproxy.simulate.scenario import Scenario
from dlproxy.simulate.traces import parse_trace


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``simulate`` flags, added to the parser the main CLI gives us."""
    parser.add_argument(
        "--trace", required=True, metavar="step|bursty|diurnal|file:CSV", help="load shape"
    )
    parser.add_argument(
        "--policy", default="all", help=f"{' | '.join(sorted(POLICIES))} | all (default all)"
    )
    parser.add_argument("--slo-ms", type=float, default=100.0, help="p99 objective (100)")
    parser.add_argument("--duration", type=float, metavar="S", help="seconds (3600; file: its own)")
    parser.add_argument("--seed", type=int, default=1, help="arrivals and bursts seed (1)")
    parser.add_argument(
        "--profile", type=Path, metavar="PATH", help="`dlproxy bench --offline --json` output"
    )
    parser.add_argument(
        "--startup-s", type=float, default=DEFAULT_STARTUP, help="instance start-up (3)"
    )
    parser.add_argument("--max-batch", type=int, default=32, help="items per batch (32)")
    parser.add_argument("--max-queue", type=int, default=512, help="queue bound per instance")
    parser.add_argument("--min-instances", type=int, default=1)
    parser.add_argument("--max-instances", type=int, default=16)
    parser.add_argument(
        "--up-cooldown-s", type=float, default=0.0, help="seconds between scale-ups (0)"
    )
    parser.add_argument(
        "--down-cooldown-s",
        type=float,
        default=15.0,
        help="seconds after a change before a scale-down (15)",
    )
    parser.add_argument("--max-step-up", type=int, help="most instances added at once")
    parser.add_argument("--max-step-down", type=int, help="most instances removed at once")
    parser.add_argument("--cost-per-hour", type=float, default=1.0, help="per instance (1.0)")
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="policy constructor option (repeatable; with one --policy)",
    )
    parser.add_argument("--json", metavar="OUT", help="write the results as one JSON object")
    parser.add_argument("--plot", metavar="OUT.png", help="load, instances and p99 over time")


def run(args: argparse.Namespace) -> int:
    """Run ``dlproxy simulate`` as ``args`` say; returns the exit status."""
    console, errors = Console(), Console(stderr=True)
    try:
        scenario, names, options = _scenario(args)
    except (ValueError, OSError) as exc:
        errors.print(f"[red]dlproxy simulate: {exc}[/red]")
        return 2
    try:
        outcomes, sizes = _run_all(scenario, names, options)
    except KeyboardInterrupt:
        errors.print("[yellow]dlproxy simulate: interrupted[/yellow]")
        return 130
    rows = [
        report.summarise(name, outcome, scenario.slo, args.cost_per_hour)
        for name, outcome in outcomes.items()
    ]
    rows = report.relative_to(rows, _static_name("peak", sizes["peak"]))
    title = (
        f"dlproxy simulate --trace {args.trace}: {scenario.trace.duration:.0f} s, "
        f"SLO p99 {args.slo_ms:g} ms, start-up {args.startup_s:g} s"
    )
    console.print(report.table(rows, title))
    if args.json:
        data = _header(args, scenario, sizes) | {"rows": [row.to_dict() for row in rows]}
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    if args.plot:
        report.plot(args.plot, title, scenario.trace.rates, outcomes, scenario.slo)
    return 0


def _scenario(args: argparse.Namespace) -> tuple[Scenario, list[str], dict[str, Any]]:
    if args.policy != "all" and args.policy not in POLICIES:
        raise ValueError(
            f"Unknown scaling policy '{args.policy}'; choose one of: "
            f"{', '.join(sorted(POLICIES))}, all."
        )
    if args.option and args.policy == "all":
        raise ValueError("--option needs a single --policy")
    if args.slo_ms <= 0 or args.startup_s < 0 or args.cost_per_hour <= 0:
        raise ValueError("--slo-ms and --cost-per-hour must be positive, --startup-s >= 0")
    options = dict(_option(text) for text in args.option)
    trace = parse_trace(args.trace, args.duration, args.seed)
    profile = load_profile(args.profile) if args.profile else default_profile()
    model = InstanceModel(profile, args.max_batch, args.max_queue, args.startup_s)
    limits = Limits(
        min_instances=args.min_instances,
        max_instances=args.max_instances,
        up_cooldown=args.up_cooldown_s,
        down_cooldown=args.down_cooldown_s,
        max_step_up=args.max_step_up,
        max_step_down=args.max_step_down,
    )
    names = sorted(POLICIES) if args.policy == "all" else [args.policy]
    scenario = Scenario(trace, model, limits, args.slo_ms / 1000.0, args.seed)
    shared = {"slo": scenario.slo, "cost_per_hour": args.cost_per_hour}
    per_policy = {name: _defaults_for(name, shared) | options for name in names}
    return scenario, names, per_policy


def _option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with a number or a boolean value."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--option must be KEY=VALUE (got {text!r})")
    if value.lower() in ("true", "false"):
        return key, value.lower() == "true"
    try:
        return key, float(value)
    except ValueError:
        raise ValueError(
            f"--option {key}: expected a number or true/false, got {value!r}"
        ) from None


def _defaults_for(name: str, shared: dict[str, float]) -> dict[str, float]:
    """The run's SLO and cost per hour, for the policies whose constructor takes them."""
    parameters = inspect.signature(import_from_string(POLICIES[name])).parameters
    return {key: value for key, value in shared.items() if key in parameters}


def _run_all(
    scenario: Scenario, names: list[str], options: dict[str, Any]
) -> tuple[dict[str, Outcome], dict[str, int]]:
    """Size the baselines, then run every policy and both baselines, with one progress bar."""
    duration = scenario.trace.duration
    total = duration * (len(names) + 2)
    with Bar("sizing static pools", total, transient=True, columns=("bar", "remaining")) as bar:
        rates = scenario.trace.rates
        sizes = {
            "peak": scenario.static_size(float(rates.max())),
            "mean": scenario.static_size(float(rates.mean())),
        }
        outcomes: dict[str, Outcome] = {}
        for index, name in enumerate([*names, "peak", "mean"]):
            bar.update(description=f"simulating {name}")

            def tick(now: float, done: float = index * duration) -> None:
                bar.update(completed=done + now)

            if name in sizes:
                outcomes[_static_name(name, sizes[name])] = scenario.run_static(sizes[name], tick)
            else:
                outcomes[name] = scenario.run_policy(name, tick, **options[name])
    return outcomes, sizes


def _static_name(which: str, instances: int) -> str:
    return f"static at {which} ({instances})"


def _header(args: argparse.Namespace, scenario: Scenario, sizes: dict[str, int]) -> dict[str, Any]:
    limits = scenario.limits
    return {
        "trace": args.trace,
        "duration_s": scenario.trace.duration,
        "seed": args.seed,
        "slo_ms": args.slo_ms,
        "startup_s": args.startup_s,
        "profile": scenario.model.profile.source,
        "limits": {
            "min_instances": limits.min_instances,
            "max_instances": limits.max_instances,
            "up_cooldown_s": limits.up_cooldown,
            "down_cooldown_s": limits.down_cooldown,
            "max_step_up": limits.max_step_up,
            "max_step_down": limits.max_step_down,
        },
        "static_peak_instances": sizes["peak"],
        "static_mean_instances": sizes["mean"],
        "cost_per_hour": args.cost_per_hour,
    }
