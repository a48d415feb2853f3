"""The ``dlproxy`` command: serve, bench, tune, models."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

from dlproxy import __version__
from dlproxy.extras import MissingExtra, missing
from dlproxy.logging import configure as configure_logging
from dlproxy.settings import Settings, load_config_file


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="settings file (TOML or JSON)")
    parser.add_argument(
        "--model",
        action="append",
        dest="models",
        metavar="NAME[:VARIANT]",
        help="model to serve (repeatable); default minilm",
    )
    parser.add_argument(
        "--model-repository",
        type=Path,
        metavar="DIR",
        help="serve every model of DIR/<name>/<version>/ (config.json per model)",
    )
    parser.add_argument(
        "--model-control",
        choices=["all", "explicit"],
        help="with a repository: load all models at start (default), or only on a load call",
    )
    parser.add_argument(
        "--repository-poll-s",
        type=float,
        metavar="S",
        help="scan the repository every S seconds; reload what changed",
    )
    parser.add_argument(
        "--memory-budget",
        metavar="BYTES",
        help="memory the repository's workers may hold (e.g. 2GiB): models load on first "
        "request and the least recently used idle one is unloaded to make room",
    )
    parser.add_argument(
        "--instances", type=int, help="worker processes per model (default: from cores)"
    )
    parser.add_argument(
        "--threads", type=int, help="threads per worker (default: cores / instances)"
    )
    parser.add_argument("--policy", help="scheduling policy")
    parser.add_argument("--weights", help="W1,W2,.. instance weights (weighted_round_robin)")
    parser.add_argument("--max-batch", type=int)
    parser.add_argument("--max-delay-ms", type=float)
    parser.add_argument(
        "--batching",
        choices=["fixed", "adaptive"],
        help="batch limit: fixed at --max-batch, or adaptive (AIMD up to --max-batch; needs --slo-ms)",
    )
    parser.add_argument("--slo-ms", type=float, help="p99 latency objective (adaptive batching)")
    parser.add_argument("--pipeline-depth", type=int)
    parser.add_argument(
        "--pipeline-stages",
        type=int,
        metavar="K",
        help="model parallelism: each instance is K processes holding consecutive layers "
        "(minilm:torch)",
    )
    parser.add_argument("--max-queue", type=int, help="items that may wait per instance")
    parser.add_argument(
        "--max-queue-wait-ms", type=float, help="refuse when the queue wait would exceed this"
    )
    parser.add_argument("--rate-limit", type=float, help="requests/s per client (429 beyond)")
    parser.add_argument("--rate-burst", type=float, help="requests a client may send at once")
    parser.add_argument("--max-items", type=int, help="most items in one request")
    parser.add_argument("--max-body-bytes", type=int)
    parser.add_argument("--request-timeout-ms", type=float, help="default deadline per request")
    parser.add_argument(
        "--hang-timeout-s", type=float, help="kill a worker holding a batch this long"
    )
    parser.add_argument("--heartbeat-timeout-s", type=float, help="kill a worker silent this long")
    parser.add_argument("--cache", help="result cache: none, lru, lfu, fifo, two_level, tinylfu")
    parser.add_argument("--cache-size", type=int, help="most cached items")
    parser.add_argument("--cache-bytes", type=int, help="most cached bytes")
    parser.add_argument("--cache-ttl", type=float, help="seconds a cached result stays valid")
    parser.add_argument("--redis", metavar="URL", help="shared cache level (L2) on Redis")
    parser.add_argument(
        "--memcached", metavar="HOST:PORT", help="shared cache level (L2) on memcached"
    )
    parser.add_argument(
        "--write-policy",
        choices=["through", "back", "combining"],
        help="how stores reach the shared level (default through)",
    )
    parser.add_argument(
        "--l2-timeout-ms", type=float, help="longest a shared-level call may take (default 50)"
    )
    parser.add_argument(
        "--no-coalesce",
        dest="coalesce",
        action="store_false",
        default=None,
        help="do not merge identical in-flight items",
    )
    parser.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        metavar="KEY",
        help="API key for inference and metadata routes (repeatable; or DLPROXY_API_KEYS=k1,k2)",
    )
    parser.add_argument(
        "--api-keys-file", type=Path, metavar="PATH", help="file of API keys, one per line"
    )
    parser.add_argument(
        "--admin-token",
        metavar="TOKEN",
        help="token for /admin and repository routes (or DLPROXY_ADMIN_TOKEN); without one "
        "they are closed unless --admin-loopback",
    )
    parser.add_argument(
        "--admin-loopback",
        action="store_true",
        default=None,
        help="without an admin token, let clients on this machine use admin routes (not behind "
        "a same-host proxy or sidecar: every caller is local there)",
    )
    parser.add_argument(
        "--forwarded-allow-ips",
        metavar="IPS",
        help="comma-separated proxies (IPs or networks) whose X-Forwarded-For is believed",
    )
    parser.add_argument(
        "--admin-port",
        type=int,
        metavar="PORT",
        help="serve admin routes, /metrics, /stats and /dashboard on this port only",
    )
    parser.add_argument(
        "--upstream",
        action="append",
        dest="upstreams",
        metavar="URL",
        help="a KServe v2 server serving the same model(s), used as an instance (repeatable)",
    )
    parser.add_argument(
        "--health-interval-s", type=float, help="seconds between upstream health checks"
    )
    parser.add_argument(
        "--outlier-failures", type=int, help="failed requests in a row that eject an upstream"
    )
    parser.add_argument(
        "--outlier-base-ejection-s", type=float, help="first ejection time; grows with each one"
    )
    parser.add_argument(
        "--hedge-ms",
        type=float,
        help="also ask a second instance when the first has not answered after this long",
    )
    parser.add_argument(
        "--backend", choices=["local", "ray"], help="instances as local processes or Ray actors"
    )
    parser.add_argument(
        "--ray-address", metavar="HOST:PORT", help="Ray cluster head (default: start Ray here)"
    )
    parser.add_argument("--ray-num-cpus", type=float, help="CPUs each Ray actor asks for")
    parser.add_argument(
        "--gateways", type=int, help="gateway processes sharing the port (SO_REUSEPORT)"
    )
    parser.add_argument("--autoscale", help="threshold, queue_length, predictive or cost")
    parser.add_argument(
        "--scale-option",
        action="append",
        dest="scale_options",
        metavar="KEY=VALUE",
        help="an option of the scaling policy (repeatable), e.g. target=4",
    )
    parser.add_argument("--min-instances", type=int)
    parser.add_argument("--max-instances", type=int)
    parser.add_argument("--scale-interval-s", type=float)
    parser.add_argument("--scale-down-cooldown-s", type=float)
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--log-level")
    parser.add_argument(
        "--no-metrics",
        dest="metrics",
        action="store_false",
        default=None,
        help="record no per-request metrics (to measure their cost)",
    )
    parser.add_argument("--log-format", choices=["text", "json"])
    parser.add_argument("--access-log", action="store_true", default=None, help="log every request")


def settings_from(args: argparse.Namespace) -> Settings:
    values: dict[str, Any] = {}
    if args.config is not None:
        values.update(load_config_file(args.config))
    for key, value in vars(args).items():
        if key in ("config", "command", "handler") or value is None:
            continue
        if key == "scale_options":
            value = dict(_option(item) for item in value)
        if key == "weights":
            value = [float(w) for w in value.split(",")]
        values[key] = value
    return Settings(**values)


def _option(item: str) -> tuple[str, float]:
    key, sep, value = item.partition("=")
    try:
        if not sep:
            raise ValueError
        return key.strip(), float(value)
    except ValueError:
        raise SystemExit(f"--scale-option takes KEY=NUMBER, got {item!r}") from None


def _run_serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    try:
        settings = settings_from(args)
    except ValidationError as exc:  # one line per bad setting, not a traceback
        for error in exc.errors():
            where = "".join(f"{part}: " for part in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            print(f"dlproxy serve: {where}{message}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    if settings.gateways > 1:
        from dlproxy.multigateway import supervise

        return supervise(settings)
    try:
        import uvloop

        uvloop.run(_serve(settings))
    except KeyboardInterrupt:
        pass
    return 0


async def _serve(settings: Settings) -> None:
    from dlproxy.app import serve

    await serve(settings)


TOOLS = (
    (
        "bench",
        "dlproxy.bench.command",
        "bench",
        "load-test a running server, or a model alone (--offline)",
    ),
    (
        "simulate",
        "dlproxy.simulate.command",
        "plot",
        "compare scaling policies on a load trace, on a virtual clock",
    ),
    (
        "tune",
        "dlproxy.bench.tune",
        "bench",
        "sweep instances x max batch x max delay; write the best config for an SLO",
    ),
    (
        "compress",
        "dlproxy.compression.command",
        "compression",
        "quantize or prune a model into a servable variant, with a measured report",
    ),
    (
        "distill",
        "dlproxy.compression.distill",
        "distillation",
        "distill the digits teacher into a small student, data-parallel (gloo)",
    ),
)
"""The tool commands (name, module, the extra it needs, help): each module has
``add_arguments(parser)`` and ``run(args) -> int``."""


def _add_tool(commands: Any, name: str, module: str, extra: str, help: str) -> None:
    """A tool's subcommand; its module is imported to read its flags, and again to run."""
    parser = commands.add_parser(name, help=help)
    try:
        importlib.import_module(module).add_arguments(parser)
    except ImportError:  # its extra is missing: take any arguments, running it says which
        parser.add_argument("arguments", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    parser.set_defaults(handler=lambda args: importlib.import_module(module).run(args), extra=extra)


def _run_models(args: argparse.Namespace) -> int:
    from dlproxy.models.registry import BUILTIN

    if args.export:
        from dlproxy.models.registry import create_model, extra_for

        for reference in args.export:
            try:
                model = create_model(reference)
                model.load()
            except ImportError as exc:
                lacking = missing(exc, f"model '{reference}'", extra_for(reference))
                if lacking is None:
                    raise
                raise lacking from None
            print(f"{reference}: ready ({model.spec.platform}, version {model.spec.version})")
        return 0
    for name in sorted(BUILTIN):
        print(name)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dlproxy", description="A deep-learning inference proxy.")
    parser.add_argument("--version", action="version", version=f"dlproxy {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser("serve", help="serve models over HTTP (KServe v2, OpenAI)")
    _serve_arguments(serve)
    serve.set_defaults(handler=_run_serve)
    for name, module, extra, help in TOOLS:
        _add_tool(commands, name, module, extra, help)
    models = commands.add_parser("models", help="list built-in models; --export to prepare them")
    models.add_argument(
        "--export", nargs="*", metavar="NAME[:VARIANT]", help="load (and export) these"
    )
    models.set_defaults(handler=_run_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["serve", *(argv or sys.argv[1:])])
    try:
        return int(args.handler(args))
    except MissingExtra as exc:
        print(f"dlproxy {args.command}: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        lacking = missing(exc, f"dlproxy {args.command}", getattr(args, "extra", None))
        if lacking is None:
            raise
        print(f"dlproxy: {lacking}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
