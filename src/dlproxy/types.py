"""The data that crosses module boundaries: requests, responses, tensor specs, instance views.

Tensors are numpy arrays whose first dimension is the item (batch) axis. A ``BYTES`` tensor is a
1-d numpy array of ``object`` dtype holding ``bytes``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

InstanceId = str

# KServe v2 datatype <-> numpy dtype; BYTES is an object array of bytes.
DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
DATATYPES: dict[str, str] = {str(v): k for k, v in DTYPES.items() if k != "BYTES"}


def datatype_of(array: np.ndarray) -> str:
    """The KServe datatype name of a numpy array."""
    if array.dtype == object:
        return "BYTES"
    return DATATYPES[str(array.dtype)]


def datatype_name(array: np.ndarray) -> str:
    """The KServe datatype name of an array, or numpy's name of a dtype KServe has not."""
    try:
        return datatype_of(array)
    except KeyError:
        return str(array.dtype)


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output of a model; ``shape`` starts with -1, the item axis."""

    name: str
    datatype: str
    shape: tuple[int, ...]


def mismatch(datatype: str, shape: Sequence[int], tensor: TensorSpec) -> str:
    """Which part of a tensor of ``datatype`` and ``shape`` differs from what ``tensor`` declares:
    "datatype", "shape" (rank, or a fixed dimension; -1 is free), or "" when it conforms."""
    if datatype != tensor.datatype:
        return "datatype"
    if len(shape) != len(tensor.shape) or any(
        want not in (-1, got) for want, got in zip(tensor.shape[1:], shape[1:], strict=False)
    ):
        return "shape"
    return ""


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What the gateway knows of a model without loading it: sent by a worker once it is ready."""

    name: str
    version: str
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int
    unit_bytes: int = 0
    """How batches count a text (BYTES) item: one unit per ``unit_bytes`` bytes, rounded up (0: one
    per item). A model that chunks long texts does work in proportion to their length, so the
    batcher fills batches by units, not items: 32 texts of 5,000 words are ~870 windows, not 32."""
    recipe: str = ""
    """What decides the numbers besides name and version: how the graph was made (export,
    quantization) and run, or a digest of a model file's content. Part of every cache key, so a
    shared cache filled by another recipe of the "same" model is never read as this one."""

    parameters: tuple[str, ...] | None = None
    """The request parameters the model reads (``truncate``, ...); others never reach it, nor
    its cache keys, nor split its batches. None: it does not say, so it gets them all."""

    def output(self, name: str) -> TensorSpec | None:
        """The declared output ``name``, or None (outputs are few: a scan beats a dict)."""
        for tensor in self.outputs:
            if tensor.name == name:
                return tensor
        return None

    @property
    def fingerprint(self) -> str:
        """Everything that identifies this model's results: what cache keys are built from."""
        return f"{self.version}\0{self.recipe}"


@dataclass(slots=True)
class InferenceRequest:
    """A decoded request: ``inputs`` hold ``items`` rows each (the first dimension)."""

    model: str
    inputs: dict[str, np.ndarray]
    id: str = ""
    protocol: str = "kserve"
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: list[str] | None = None
    session_key: str | None = None
    deadline: float | None = None
    version: str = ""  # a version of the model (the versioned routes); "" is its default
    priority: int = 0
    """Served before lower ones waiting for the same instance (0, the default, to 9); a level
    is added per second waited (``Batcher.aging``), so low ones still get through."""
    client: str = ""
    """Who sent it, for fair shares: the verified API key's digest, else the address."""
    alone: bool = False
    """Batched with no other request: set on a retry after the instance holding its batch died
    or hung, so that a request that kills instances shows itself by failing alone."""
    _digest: bytes | None = None

    def digest(self) -> bytes:
        """A stable digest of the inputs (names, dtypes, shapes, values), computed once."""
        if self._digest is None:
            h = hashlib.blake2b(digest_size=16)
            for name in sorted(self.inputs):
                array = self.inputs[name]
                h.update(name.encode())
                h.update(str(array.shape).encode())
                if array.dtype == object:
                    for item in array.ravel():
                        h.update(len(item).to_bytes(8, "little"))
                        h.update(item)
                else:
                    h.update(array.dtype.str.encode())
                    h.update(np.ascontiguousarray(array).tobytes())
            self._digest = h.digest()
        return self._digest

    def routing_key(self) -> str:
        """What consistent hashing routes on: the session key, else the input digest."""
        return self.session_key or self.digest().hex()

    @property
    def items(self) -> int:
        for array in self.inputs.values():
            return int(array.shape[0]) if array.ndim else 1
        return 0


@dataclass(slots=True)
class InferenceResponse:
    """The model's answer to one request, plus where it came from."""

    model: str
    model_version: str
    id: str
    outputs: dict[str, np.ndarray]
    instance: InstanceId = ""
    cache: str = "miss"
    load_wait: float = 0.0  # s it waited for its model to load (models loaded on demand)


@dataclass(frozen=True, slots=True)
class InstanceView:
    """What a scheduling policy may know about an instance."""

    id: InstanceId
    weight: float = 1.0
    inflight: int = 0
    queue_depth: int = 0
    latency_ewma: float = 0.0
    healthy: bool = True
