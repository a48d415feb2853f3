"""The KServe v2 binary tensor extension, both ways, in one place.

The server side (``http/codecs.py``: decode requests, encode answers) and the client side
(``instances/upstream.py``: encode a batch for a remote server, decode its answer) frame tensors
with these functions, so the two cannot drift apart. A tensor's binary data is its raw
little-endian bytes; a BYTES tensor is its elements, each a 4-byte little-endian length and then
its bytes. Functions here raise ``ValueError`` naming what does not add up; callers say which
tensor and map it to their own error.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson

from dlproxy import protocol
from dlproxy.types import DTYPES, ModelSpec, TensorSpec, datatype_of

_U32 = struct.Struct("<I")


def tensor_blob(array: np.ndarray) -> bytes | memoryview:
    """The binary data of a tensor: raw little-endian bytes (a view when it can), framed for BYTES."""
    if array.dtype == object:
        parts: list[bytes] = []
        for item in array.ravel().tolist():
            data = item.encode("utf-8") if isinstance(item, str) else bytes(item)
            parts.append(_U32.pack(len(data)))
            parts.append(data)
        return b"".join(parts)
    contiguous = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    flat: Any = contiguous.reshape(-1).view(np.uint8)  # numpy arrays are buffers
    return memoryview(flat)


def unframe(buffer: bytes, offset: int, size: int, count: int | None = None) -> list[bytes]:
    """The elements of BYTES binary data at ``buffer[offset:offset + size]``; with ``count``, also
    check that there are exactly that many (what the tensor's shape says)."""
    end = offset + size
    items: list[bytes] = []
    position = offset
    while position < end:
        if count is not None and len(items) == count:
            raise ValueError(f"binary data holds more than the {count} elements")
        if position + 4 > end:
            raise ValueError(f"binary data ends inside the length of element {len(items)}")
        (length,) = _U32.unpack_from(buffer, position)
        position += 4
        if position + length > end:
            raise ValueError(
                f"element {len(items)} declares {length} bytes but only "
                f"{end - position} remain in its binary_data_size of {size}"
            )
        items.append(buffer[position : position + length])
        position += length
    if count is not None and len(items) != count:
        raise ValueError(f"binary data holds {len(items)} elements, not {count}")
    return items


# --- the client side: one batch to a remote server, and its answer -----------------------------


def encode_infer_request(
    inputs: dict[str, np.ndarray], parameters: dict[str, Any]
) -> tuple[bytes, int]:
    """One infer request body (all inputs binary, all outputs asked binary) and its JSON length
    (the ``Inference-Header-Content-Length``)."""
    specs: list[dict[str, Any]] = []
    blobs: list[bytes | memoryview] = []
    for name, array in inputs.items():
        blob = tensor_blob(array)
        specs.append(
            {
                "name": name,
                "datatype": datatype_of(array),
                "shape": list(array.shape),
                "parameters": {"binary_data_size": len(blob)},
            }
        )
        blobs.append(blob)
    header = orjson.dumps(
        {"inputs": specs, "parameters": {**parameters, "binary_data_output": True}}
    )
    return b"".join([header, *blobs]), len(header)


def decode_infer_response(
    body: bytes, header_length: str | None, items: int
) -> dict[str, protocol.WireTensor]:
    """The outputs of an infer answer (binary or JSON data) as wire tensors of ``items`` rows."""
    end = int(header_length) if header_length else len(body)
    header = orjson.loads(body[:end])
    offset = end
    outputs: dict[str, protocol.WireTensor] = {}
    for output in header["outputs"]:
        name, datatype = output["name"], output["datatype"]
        shape = tuple(int(d) for d in output["shape"])
        if datatype not in DTYPES:
            raise ValueError(f"output '{name}' has unknown datatype '{datatype}'")
        if not shape or shape[0] != items:
            raise ValueError(f"output '{name}' has shape {list(shape)} for {items} items")
        count = int(np.prod(shape))
        size = (output.get("parameters") or {}).get("binary_data_size")
        data: bytes | list[bytes]
        if size is None:
            data = _from_json(datatype, output["data"])
        else:
            if offset + size > len(body):
                raise ValueError(f"output '{name}' binary data runs past the body")
            data = (
                unframe(body, offset, size) if datatype == "BYTES" else body[offset : offset + size]
            )
            offset += size
        if datatype == "BYTES":
            if len(data) != count:
                raise ValueError(f"output '{name}' has {len(data)} elements, shape says {count}")
        elif len(data) != count * DTYPES[datatype].itemsize:
            raise ValueError(f"output '{name}' has {len(data)} bytes for shape {list(shape)}")
        outputs[name] = protocol.WireTensor(datatype, shape, data)
    return outputs


def _from_json(datatype: str, values: Any) -> bytes | list[bytes]:
    if datatype == "BYTES":
        flat = np.array(values, dtype=object).ravel().tolist()
        return [v.encode() if isinstance(v, str) else bytes(v) for v in flat]
    return np.array(values, dtype=DTYPES[datatype]).tobytes()


def error_message(body: bytes, status: int) -> str:
    """The message of a KServe error answer (``{"error": ...}``), or what the body starts with."""
    try:
        return str(orjson.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body[:200].decode("utf-8", "replace") or f"HTTP {status}"


def spec_of(model: str, metadata: dict[str, Any]) -> ModelSpec:
    """A ModelSpec from KServe v2 model metadata (``GET /v2/models/{m}``)."""

    def tensors(key: str) -> tuple[TensorSpec, ...]:
        return tuple(
            TensorSpec(t["name"], t["datatype"], tuple(int(d) for d in t["shape"]))
            for t in metadata.get(key) or []
        )

    versions = metadata.get("versions") or [""]
    return ModelSpec(
        name=model,
        version=str(versions[-1]),
        platform=str(metadata.get("platform", "")),
        inputs=tensors("inputs"),
        outputs=tensors("outputs"),
        max_batch_size=int(metadata.get("max_batch_size", 0)),
    )


def metadata_of(spec: ModelSpec) -> dict[str, Any]:
    """KServe v2 model metadata of a ModelSpec (the inverse of ``spec_of``)."""
    return {
        "name": spec.name,
        "versions": [spec.version],
        "platform": spec.platform,
        "inputs": [
            {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in spec.inputs
        ],
        "outputs": [
            {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in spec.outputs
        ],
        "max_batch_size": spec.max_batch_size,
    }
