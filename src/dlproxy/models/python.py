"""A user's Python class, ``module:Class``, served as a model.

The class is instantiated with no arguments; ``load()`` (if it has one) runs in the worker and
``predict(batch)`` takes and returns ``dict[str, np.ndarray]``. Optional class attributes
``inputs`` and ``outputs`` (lists of ``(name, datatype, shape)``) describe it for the gateway;
``max_batch_size`` (default 64) bounds the batches it receives. Without ``inputs`` any input is
passed through, so the gateway cannot validate requests for it. ``recipe`` (a string) names what
decides its numbers (weights, code version): it is part of the cache keys, so change it whenever
the results change, or a shared cache serves the old ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from dlproxy.models.base import Model
from dlproxy.plugins import import_from_string
from dlproxy.types import DTYPES, ModelSpec, TensorSpec

DEFAULT_MAX_BATCH_SIZE = 64


class PythonClassModel(Model):
    """Wraps an instance of ``module:Class``; the spec is known before ``load``."""

    def __init__(self, reference: str, threads: int = 1) -> None:
        self.reference = reference
        self.threads = threads
        self.cls: type[Any] = import_from_string(reference)
        if not isinstance(self.cls, type):
            raise TypeError(f"'{reference}' is not a class.")
        if not callable(getattr(self.cls, "predict", None)):
            raise TypeError(f"'{reference}' has no predict(batch) method.")
        self.spec = ModelSpec(
            name=self.cls.__name__.lower(),
            version="1",
            platform="python",
            inputs=_specs(getattr(self.cls, "inputs", ()), reference, "inputs"),
            outputs=_specs(getattr(self.cls, "outputs", ()), reference, "outputs"),
            max_batch_size=int(getattr(self.cls, "max_batch_size", DEFAULT_MAX_BATCH_SIZE)),
            recipe=f"python/{reference}/{getattr(self.cls, 'recipe', '')}",
        )
        self._instance: Any = None

    def load(self) -> None:
        """Instantiate with no arguments, then call the instance's ``load()`` if it has one."""
        self._instance = self.cls()
        load = getattr(self._instance, "load", None)
        if callable(load):
            load()

    def predict(
        self, inputs: dict[str, np.ndarray], parameters: dict[str, Any]
    ) -> dict[str, np.ndarray]:
        """Call the user's ``predict(batch)``; its outputs must be arrays keyed by name."""
        if self._instance is None:
            raise RuntimeError(f"{self.reference}: predict before load.")
        result = self._instance.predict(inputs)
        if not isinstance(result, dict):
            raise TypeError(f"{self.reference}.predict returned {type(result).__name__}, not dict.")
        return {name: np.asarray(value) for name, value in result.items()}


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
