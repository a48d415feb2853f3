"""Pluggable parts chosen by name from a ``name -> "module:Class"`` table."""

from __future__ import annotations

import importlib
from typing import Any


def import_from_string(spec: str) -> Any:
    """Import ``"package.module:Attribute"``; the error names the expected format."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ImportError(f'Import string "{spec}" must be in format "<module>:<attribute>".')
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ImportError(
            f'Could not import module "{module_name}" (from "{spec}"): {exc}'
        ) from exc
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise ImportError(f'Attribute "{attr}" not found in module "{module_name}".') from exc


def load_named(table: dict[str, str], name: str, family: str) -> Any:
    """The class registered under ``name`` in ``table``; the error lists the known names."""
    try:
        spec = table[name]
    except KeyError:
        known = ", ".join(sorted(table))
        raise ValueError(f"Unknown {family} '{name}'; choose one of: {known}.") from None
    return import_from_string(spec)
