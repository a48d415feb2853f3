"""The binary messages between the gateway and a worker process (msgpack via msgspec).

One ``Batch`` message carries a whole batch; tensors travel as raw bytes (numeric) or a list of
bytes (BYTES), never as JSON. Workers put their load figures in every reply.
"""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np

from dlproxy.types import DTYPES, ModelSpec, datatype_of


class WireTensor(msgspec.Struct, array_like=True):
    datatype: str
    shape: tuple[int, ...]
    data: bytes | list[bytes]


class Batch(msgspec.Struct, tag=True, array_like=True):
    """gateway -> worker: compute these inputs."""

    id: int
    inputs: dict[str, WireTensor]
    parameters: dict[str, Any] = {}
    borrow: bool = False
    """The gateway's other workers hold nothing: the model may borrow their cores for this one
    (``Model.borrow_threads``)."""


class Stop(msgspec.Struct, tag=True, array_like=True):
    """gateway -> worker: finish what you hold, then exit."""


class Load(msgspec.Struct, array_like=True):
    """A worker's load figures, sent with every reply and heartbeat."""

    service_time: float = 0.0
    cpu_percent: float = 0.0
    rss_bytes: int = 0
    batches: int = 0


class Ready(msgspec.Struct, tag=True, array_like=True):
    """worker -> gateway: the model is loaded and warmed up (``load``: its memory now)."""

    pid: int
    spec: ModelSpec
    load: Load = msgspec.field(default_factory=Load)


class LoadFailed(msgspec.Struct, tag=True, array_like=True):
    """worker -> gateway: the model could not be made or loaded (the worker then exits)."""

    message: str


class Result(msgspec.Struct, tag=True, array_like=True):
    """worker -> gateway: one batch computed."""

    id: int
    outputs: dict[str, WireTensor]
    load: Load
    tokens: int = 0
    """Tokens the model ran for this batch, padding excluded (a text model; else 0)."""
    padded: int = 0
    """Tokens the model ran for this batch, padding included: ``padded - tokens`` is waste."""


class Failure(msgspec.Struct, tag=True, array_like=True):
    """worker -> gateway: the model raised on this batch (the worker lives on)."""

    id: int
    message: str
    bad_input: bool
    load: Load


class Heartbeat(msgspec.Struct, tag=True, array_like=True):
    """worker -> gateway: still alive (sent while idle and between long batches)."""

    load: Load


ToWorker = Batch | Stop
FromWorker = Ready | LoadFailed | Result | Failure | Heartbeat

_encoder = msgspec.msgpack.Encoder()
_to_worker = msgspec.msgpack.Decoder(ToWorker)
_from_worker = msgspec.msgpack.Decoder(FromWorker)


def encode(message: msgspec.Struct) -> bytes:
    return _encoder.encode(message)


def decode_to_worker(data: bytes | memoryview) -> Batch | Stop:
    return _to_worker.decode(data)


def decode_from_worker(data: bytes | memoryview) -> FromWorker:
    return _from_worker.decode(data)


def to_wire(array: np.ndarray) -> WireTensor:
    """A numpy array as a wire tensor, without a per-element loop for numeric data."""
    if array.dtype == object:
        return WireTensor("BYTES", array.shape, array.ravel().tolist())
    return WireTensor(datatype_of(array), array.shape, np.ascontiguousarray(array).tobytes())


def from_wire(tensor: WireTensor) -> np.ndarray:
    """The numpy array of a wire tensor; numeric data is a zero-copy view of the message."""
    if isinstance(tensor.data, list):
        array = np.empty(len(tensor.data), dtype=object)
        array[:] = tensor.data
        return array.reshape(tensor.shape)
    dtype = DTYPES[tensor.datatype]
    return np.frombuffer(tensor.data, dtype=dtype).reshape(tensor.shape)
