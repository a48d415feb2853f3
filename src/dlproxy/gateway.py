"""The request pipeline, top to bottom in ``Gateway.infer``.

validate -> (cache) -> scheduler picks an instance -> its batch queue -> worker -> split results.
A request whose instance dies while holding it is retried on another instance (inference is
idempotent); every other failure is answered once, as a domain error the HTTP layer maps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from dlproxy.errors import BadRequest, DeadlineExceeded, InstanceFailed, ModelNotFound, PayloadTooLarge
from dlproxy.instances.pool import InstancePool
from dlproxy.types import DTYPES, InferenceRequest, InferenceResponse, ModelSpec, datatype_of

# Request parameters that steer the transport, not the model: never sent to a worker.
TRANSPORT_PARAMETERS = frozenset({"binary_outputs", "binary_data_output", "encoding_format", "dimensions", "user"})


@dataclass(frozen=True, slots=True)
class Limits:
    max_items: int = 256
    max_text_bytes: int = 65536
    max_attempts: int = 3


class Gateway:
    def __init__(self, pools: Iterable[InstancePool], limits: Limits) -> None:
        self.pools = {pool.name: pool for pool in pools}
        self.limits = limits
        self.started = False  # set once the initial instances are up

    @property
    def ready(self) -> bool:
        return self.started and all(pool.ready for pool in self.pools.values())

    def pool(self, model: str) -> InstancePool:
        try:
            return self.pools[model]
        except KeyError:
            served = ", ".join(sorted(self.pools)) or "none"
            raise ModelNotFound(f"model '{model}' is not served here (served: {served})") from None

    async def infer(self, request: InferenceRequest) -> InferenceResponse:
        pool = self.pool(request.model)
        spec = pool.spec
        if spec is not None:
            validate(request, spec, self.limits)
        parameters = model_parameters(request)
        tried: frozenset[str] = frozenset()
        deadline = request.deadline
        for attempt in range(self.limits.max_attempts):
            instance = pool.choose(request, exclude=tried)
            try:
                future = instance.submit(request, parameters)
                if deadline is None:
                    outputs = await future
                else:
                    async with asyncio.timeout_at(deadline):
                        outputs = await future
            except InstanceFailed:
                if attempt + 1 == self.limits.max_attempts:
                    raise
                tried |= {instance.id}
                continue
            except TimeoutError:
                raise DeadlineExceeded("the request's deadline passed before the model answered") from None
            version = spec.version if spec is not None else ""
            return InferenceResponse(request.model, version, request.id, outputs, instance.id)
        raise AssertionError("unreachable")

    async def close(self) -> None:
        await asyncio.gather(*(pool.close() for pool in self.pools.values()))


def model_parameters(request: InferenceRequest) -> dict[str, object]:
    if not request.parameters:
        return {}
    return {k: v for k, v in request.parameters.items() if k not in TRANSPORT_PARAMETERS}


def validate(request: InferenceRequest, spec: ModelSpec, limits: Limits) -> None:
    """Check the request against the model's declared inputs and the gateway's limits."""
    items = request.items
    if items == 0:
        raise BadRequest("the request has no items: send at least one")
    if items > limits.max_items:
        raise PayloadTooLarge(f"the request has {items} items; the limit is {limits.max_items} per request")
    for name, array in request.inputs.items():
        if array.ndim == 0 or array.shape[0] != items:
            raise BadRequest(f"input '{name}' has shape {list(array.shape)}; every input needs {items} rows")
    if not spec.inputs:
        return
    expected = {t.name: t for t in spec.inputs}
    missing = expected.keys() - request.inputs.keys()
    if missing:
        raise BadRequest(f"missing input(s) {sorted(missing)} for model '{spec.name}'")
    unexpected = request.inputs.keys() - expected.keys()
    if unexpected:
        raise BadRequest(f"unexpected input(s) {sorted(unexpected)}; model '{spec.name}' takes {sorted(expected)}")
    for name, tensor in expected.items():
        array = request.inputs[name]
        if array.dtype != DTYPES[tensor.datatype]:
            raise BadRequest(f"input '{name}' must be {tensor.datatype}, got {_datatype_name(array)}")
        if len(array.shape) != len(tensor.shape) or any(
            want not in (-1, got) for want, got in zip(tensor.shape[1:], array.shape[1:], strict=False)
        ):
            raise BadRequest(f"input '{name}' has shape {list(array.shape)}; the model takes {list(tensor.shape)}")
        if tensor.datatype == "BYTES":
            _check_texts(name, array, limits.max_text_bytes)


def _check_texts(name: str, array: np.ndarray, max_bytes: int) -> None:
    for index, item in enumerate(array.ravel()):
        if len(item) > max_bytes:
            raise PayloadTooLarge(f"input '{name}' item {index} is {len(item)} bytes; the limit is {max_bytes}")
        if len(item) == 0:
            raise BadRequest(f"input '{name}' item {index} is empty")
        try:
            item.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest(f"input '{name}' item {index} is not valid UTF-8 text") from None


def _datatype_name(array: np.ndarray) -> str:
    try:
        return datatype_of(array)
    except KeyError:
        return str(array.dtype)
