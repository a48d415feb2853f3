"""A user's Python model, ``module:Class``, served as a model.

The public contract is ``dlproxy.PythonModel``: subclass it, set the class attributes that
describe the model, and implement ``predict(batch, parameters)``; ``setup(threads, options)``
runs once in the worker (``options``: the ``"options"`` table of the model's repository
``model.json``) and ``close()`` when the worker stops. ``examples/custom_model/`` is a worked one.

A plain class with ``load()`` and ``predict(batch)`` (no base class) is still served as before.
Optional class attributes, for both: ``inputs`` and ``outputs`` (lists of ``(name, datatype,
shape)``) describe it for the gateway (without ``inputs`` any input is passed through, so the
gateway cannot validate requests); ``max_batch_size`` (default 64) bounds its batches; ``name``
and ``version`` are what it is served as (default: the class name in lower case, and "1"; a
repository names it itself); ``recipe`` (a string) names what decides its numbers besides the
code (weights loaded from elsewhere): it is part of the cache keys, with a digest of the class's
source file and of its options, so a replaced file or other options never share entries with the
old ones, but change it whenever weights the code reads change. ``parameters`` (a tuple of
names) lists the request parameters ``predict`` reads; others are not passed (and do not split
batches or cache entries). Without it, every parameter is passed.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import orjson

from dlproxy.models.base import Model, file_digest
from dlproxy.plugins import import_from_string
from dlproxy.types import DTYPES, ModelSpec, TensorSpec

DEFAULT_MAX_BATCH_SIZE = 64
Spec = tuple[str, str, tuple[int, ...]]


class PythonModel:
    """Subclass this to serve your own Python code (``--model package.module:YourModel``, or a
    repository version's ``model.json``); the worker makes one with no arguments, calls
    ``setup`` once, then ``predict`` per batch, and ``close`` when it stops."""

    name: ClassVar[str | None] = None
    version: ClassVar[str] = "1"
    inputs: ClassVar[list[Spec]] = []
    outputs: ClassVar[list[Spec]] = []
    max_batch_size: ClassVar[int] = DEFAULT_MAX_BATCH_SIZE
    recipe: ClassVar[str] = ""
    parameters: ClassVar[tuple[str, ...] | None] = None

    def setup(self, threads: int, options: dict[str, Any]) -> None:
        """Load weights and warm up; ``threads`` is the worker's share of the cores, ``options``
        the model's own settings (``{}`` without any)."""

    def predict(
        self, batch: dict[str, np.ndarray], parameters: dict[str, Any]
    ) -> dict[str, np.ndarray]:
        """One batch: arrays keyed by input name in, by output name out, as many rows each; the
        request's parameters (one request's, since a batch holds requests with equal ones)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what ``setup`` took."""


class PythonClassModel(Model):
    """Wraps an instance of ``module:Class``; the spec is known before ``load``."""

    def __init__(
        self, reference: str, threads: int = 1, options: dict[str, Any] | None = None
    ) -> None:
        self.reference = reference
        self.threads = threads
        self.options = dict(options or {})
        self.cls: type[Any] = import_from_string(reference)
        if not isinstance(self.cls, type):
            raise TypeError(f"'{reference}' is not a class.")
        if not callable(getattr(self.cls, "predict", None)):
            raise TypeError(f"'{reference}' has no predict(batch) method.")
        self.public = issubclass(self.cls, PythonModel)
        if self.options and not self.public:
            raise TypeError(
                f"'{reference}' takes no options: subclass dlproxy.PythonModel to get them in setup()"
            )
        self.spec = ModelSpec(
            name=str(getattr(self.cls, "name", None) or self.cls.__name__.lower()),
            version=str(getattr(self.cls, "version", "1")),
            platform="python",
            inputs=_specs(getattr(self.cls, "inputs", ()), reference, "inputs"),
            outputs=_specs(getattr(self.cls, "outputs", ()), reference, "outputs"),
            max_batch_size=int(getattr(self.cls, "max_batch_size", DEFAULT_MAX_BATCH_SIZE)),
            recipe=_recipe(reference, self.cls, self.options),
            parameters=_parameters(getattr(self.cls, "parameters", None), reference),
        )
        self._instance: Any = None

    def load(self) -> None:
        """Instantiate with no arguments, then ``setup(threads, options)`` (a PythonModel) or the
        instance's ``load()`` if it has one (a plain class)."""
        self._instance = self.cls()
        if self.public:
            self._instance.setup(self.threads, self.options)
            return
        load = getattr(self._instance, "load", None)
        if callable(load):
            load()

    def predict(
        self, inputs: dict[str, np.ndarray], parameters: dict[str, Any]
    ) -> dict[str, np.ndarray]:
        """Call the user's ``predict``; its outputs must be arrays keyed by name."""
        if self._instance is None:
            raise RuntimeError(f"{self.reference}: predict before load.")
        if self.public:
            result = self._instance.predict(inputs, parameters)
        else:
            result = self._instance.predict(inputs)
        if not isinstance(result, dict):
            raise TypeError(f"{self.reference}.predict returned {type(result).__name__}, not dict.")
        return {name: np.asarray(value) for name, value in result.items()}

    def close(self) -> None:
        close = getattr(self._instance, "close", None)
        if callable(close):
            close()


def _specs(entries: Iterable[Any], reference: str, what: str) -> tuple[TensorSpec, ...]:
    """``[(name, datatype, shape), ...]`` -> TensorSpecs, checked now, not at the first call."""
    specs = []
    for entry in entries:
        try:
            name, datatype, shape = entry
        except (TypeError, ValueError):
            raise ValueError(
                f"{reference}.{what}: {entry!r} is not (name, datatype, shape)."
            ) from None
        datatype = str(datatype).upper()
        if datatype not in DTYPES:
            raise ValueError(f"{reference}.{what}: '{name}' has unknown datatype {datatype}.")
        dims = tuple(int(d) for d in shape)
        specs.append(TensorSpec(str(name), datatype, dims or (-1,)))
    return tuple(specs)


def _recipe(reference: str, cls: type[Any], options: dict[str, Any]) -> str:
    """What decides the numbers: the declared recipe, the source file's digest (a replaced file
    is another model) and the options'."""
    try:
        source = file_digest(Path(inspect.getfile(cls)))
    except (OSError, TypeError):  # defined where no file holds it (a notebook, built in)
        source = ""
    settings = hashlib.blake2b(orjson.dumps(options, option=orjson.OPT_SORT_KEYS), digest_size=8)
    declared = getattr(cls, "recipe", "")
    return f"python/{reference}/{declared}/{source}/{settings.hexdigest()}"


def _parameters(names: Any, reference: str) -> tuple[str, ...] | None:
    if names is None:
        return None
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise TypeError(f"'{reference}'.parameters must be a tuple of names, got {names!r}")
    return tuple(names)
