"""One configuration source: ``Settings``. The ``serve`` flags, the ``DLPROXY_*`` variables, the
config file's keys and ``docs/configuration.md`` are all made from its fields (name, type,
default, docstring), so none of them can drift from the others.

Precedence, highest first: flags, the ``--config`` file, the environment, the defaults. Every
configuration error is one line that names the setting (``ConfigError``; the CLI exits 2).
"""

from __future__ import annotations

import argparse
import json
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import SettingsError

from dlproxy.settings import Settings, load_config_file

FLAGS = {  # settings whose flag is not --<name-with-dashes>: repeated ones read singular
    "models": "--model",
    "upstreams": "--upstream",
    "api_keys": "--api-key",
    "scale_options": "--scale-option",
    "client_weights": "--client-weight",
}
METAVARS = {
    "models": "NAME[:VARIANT]",
    "model_repository": "DIR",
    "memory_budget": "BYTES",
    "weights": "W1,W2,...",
    "redis": "URL",
    "memcached": "HOST:PORT",
    "upstreams": "URL",
    "ray_address": "HOST:PORT",
    "api_keys": "KEY",
    "api_keys_file": "PATH",
    "admin_token": "TOKEN",
    "forwarded_allow_ips": "IPS",
    "scale_options": "KEY=VALUE",
    "client_weights": "CLIENT=WEIGHT",
}
INTERNAL = frozenset({"gateway_index"})  # set by the gateway supervisor, not by people
SECRET = "********"


class ConfigError(Exception):
    """A configuration that cannot be used; the message is one line naming the setting."""


def flag(name: str) -> str:
    return FLAGS.get(name, "--" + name.replace("_", "-"))


def env_name(name: str) -> str:
    return "DLPROXY_" + name.upper()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every setting as a flag (default None: a flag not given leaves the setting to the file,
    the environment or its default), plus ``--config``."""
    parser.add_argument("--config", type=Path, metavar="FILE", help="settings file (TOML or JSON)")
    for name, field in Settings.model_fields.items():
        if name in INTERNAL:
            continue
        kind = _unwrap(field.annotation)
        text = f"{summary(field)} (default: {_shown(name, field)}; env {env_name(name)})"
        text = text.replace("%", "%%")  # argparse formats help with %: "10%" is not a format
        options: dict[str, Any] = {"dest": name, "default": None, "help": text}
        if kind is bool:
            if field.default is True:
                parser.add_argument(
                    "--no-" + name.replace("_", "-"), action="store_false", **options
                )
            else:
                parser.add_argument(flag(name), action="store_true", **options)
            continue
        options["metavar"] = METAVARS.get(name)
        origin = typing.get_origin(kind)
        if origin is Literal:
            options["choices"] = list(typing.get_args(kind))
            options.pop("metavar")
        elif origin in (list, dict) and name in FLAGS:
            options["action"] = "append"  # repeatable: one value each
        elif kind in (int, float) and name not in METAVARS:
            options["type"] = kind
        elif kind is Path:
            options["type"] = Path
        parser.add_argument(flag(name), **options)


def summary(field: FieldInfo) -> str:
    """The first sentence of a setting's docstring (``--help`` shows it; the doc the whole)."""
    text = " ".join((field.description or "").split())
    first, dot, _ = text.partition(". ")
    return first + ("." if dot else "")


def load(args: argparse.Namespace) -> Settings:
    """The settings from the flags in ``args`` over the ``--config`` file over the environment."""
    values: dict[str, Any] = {}
    config = getattr(args, "config", None)
    if config is not None:
        try:
            values.update(load_config_file(config))
        except OSError as exc:
            raise ConfigError(f"--config {config}: {exc.strerror or exc}") from None
        except (ValueError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"--config {config}: {' '.join(str(exc).split())}") from None
    for name in Settings.model_fields:
        value = getattr(args, name, None)
        if value is not None:
            values[name] = value
    return settings_from(values)


def settings_from(values: dict[str, Any]) -> Settings:
    """``Settings(**values)`` with its errors as one ConfigError naming the setting(s)."""
    try:
        return Settings(**values)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"]) or "settings"
            message = error["msg"].removeprefix("Value error, ")
            problems.append(
                f"{name} ({flag(name) if name in Settings.model_fields else 'file'}): {message}"
            )
        raise ConfigError("; ".join(problems)) from None
    except SettingsError as exc:  # a DLPROXY_* variable that does not parse (lists are JSON)
        found = re.search(r'field "(\w+)"', str(exc))
        variable = env_name(found[1]) if found else "a DLPROXY_* variable"
        raise ConfigError(
            f"{variable} does not parse ({exc.__cause__ or exc}); lists and tables in DLPROXY_* "
            f'variables are JSON, e.g. DLPROXY_MODELS=\'["minilm", "echo"]\''
        ) from None


def effective_toml(settings: Settings) -> str:
    """The settings as a TOML config file (secrets masked): what ``dlproxy config`` prints."""
    import tomli_w

    table: dict[str, Any] = {}
    for name in Settings.model_fields:
        if name in INTERNAL:
            continue
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = SECRET
        elif isinstance(value, list) and value and isinstance(value[0], SecretStr):
            value = [SECRET for _ in value]
        elif isinstance(value, Path):
            value = str(value)
        table[name] = value
    text: str = tomli_w.dumps(table)
    return text


def reference() -> str:
    """``docs/configuration.md``: key | flag | environment | default | meaning, per setting."""
    lines = [
        "# Configuration",
        "",
        "Generated from `dlproxy.settings.Settings` by `dlproxy config --reference`; a test",
        "fails when this file is stale. Every setting is a `serve` flag, a `DLPROXY_*`",
        "environment variable (lists and tables as JSON, except the comma-separated",
        "`DLPROXY_API_KEYS` and `DLPROXY_FORWARDED_ALLOW_IPS`) and a key of the `--config`",
        "file (TOML or JSON, see `examples/dlproxy.toml`). Precedence, highest first: flags,",
        "the config file, the environment, the default. `dlproxy config [flags]` prints the",
        "effective configuration as TOML.",
        "",
        "| key | flag | environment | default | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, field in Settings.model_fields.items():
        meaning = " ".join((field.description or "").split()).replace("|", "\\|")
        shown = "(internal)" if name in INTERNAL else f"`{flag(name)}`"
        lines.append(
            f"| `{name}` | {shown} | `{env_name(name)}` | `{_shown(name, field)}` | {meaning} |"
        )
    return "\n".join(lines) + "\n"


def _shown(name: str, field: FieldInfo) -> str:
    default = field.get_default(call_default_factory=True)
    if default is None:
        return "none"
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, list | dict):
        return json.dumps(default)
    return str(default)


def _unwrap(annotation: Any) -> Any:
    """The type a flag takes: ``X | None`` -> X, ``Annotated[X, ...]`` -> X."""
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return _unwrap(members[0])
    return annotation
