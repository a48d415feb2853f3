"""The ``dlproxy`` command: serve, bench, tune, models."""

from __future__ import annotations

import argparse
import importlib
import sys
import typing
from typing import Any

from dlproxy import configuration
from dlproxy.configuration import ConfigError
from dlproxy.extras import MissingExtra, missing
from dlproxy.logging import configure as configure_logging
from dlproxy.settings import Settings
from dlproxy.version import __version__


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (exit 2) instead of the usage and the error."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def settings_from(args: argparse.Namespace) -> Settings:
    """The settings from the parsed ``serve`` flags, the ``--config`` file and the environment."""
    return configuration.load(args)


def _run_serve(args: argparse.Namespace) -> int:
    settings = settings_from(args)  # a ConfigError is one line and exit 2 (main)
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


def _run_config(args: argparse.Namespace) -> int:
    if args.reference:
        print(configuration.reference(), end="")
        return 0
    print(configuration.effective_toml(settings_from(args).resolved()), end="")
    return 0


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
    parser = Parser(prog="dlproxy", description="A deep-learning inference proxy.")
    parser.add_argument("--version", action="version", version=f"dlproxy {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    serve = commands.add_parser("serve", help="serve models over HTTP (KServe v2, OpenAI)")
    configuration.add_arguments(serve)
    serve.set_defaults(handler=_run_serve)
    config = commands.add_parser(
        "config",
        help="print the effective configuration (flags, --config file, environment) as TOML",
    )
    configuration.add_arguments(config)
    config.add_argument(
        "--reference",
        action="store_true",
        help="print the reference of every setting instead (docs/configuration.md)",
    )
    config.set_defaults(handler=_run_config)
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
    except ConfigError as exc:
        print(f"dlproxy {args.command}: configuration: {exc}", file=sys.stderr)
        return 2
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
