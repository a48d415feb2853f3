"""Pluggable parts chosen by name from a ``name -> "module:Class"`` table; the module may also
be a file, ``path/to/model.py:Class``."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any


def import_from_string(spec: str) -> Any:
    """Import ``"package.module:Attribute"``; the error names the expected format."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise ImportError(f'Import string "{spec}" must be in format "<module>:<attribute>".')
    try:
        module = (
            _from_file(Path(module_name))
            if module_name.endswith(".py")
            else importlib.import_module(module_name)
        )
    except ModuleNotFoundError as exc:
        raise ImportError(
            f'Could not import module "{module_name}" (from "{spec}"): {exc}'
        ) from exc
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise ImportError(f'Attribute "{attr}" not found in module "{module_name}".') from exc


def _from_file(path: Path) -> ModuleType:
    """A module from a file (a model's ``model.py`` in its repository folder)."""
    if not path.is_file():
        raise ModuleNotFoundError(f"no file {path}")
    name = (
        f"dlproxy_user_{hashlib.blake2b(str(path.resolve()).encode(), digest_size=6).hexdigest()}"
    )
    found = importlib.util.spec_from_file_location(name, path)
    assert found is not None and found.loader is not None
    module = importlib.util.module_from_spec(found)
    sys.modules[name] = module
    found.loader.exec_module(module)
    return module


def load_named(table: dict[str, str], name: str, family: str) -> Any:
    """The class registered under ``name`` in ``table``; the error lists the known names."""
    try:
        spec = table[name]
    except KeyError:
        known = ", ".join(sorted(table))
        raise ValueError(f"Unknown {family} '{name}'; choose one of: {known}.") from None
    return import_from_string(spec)
