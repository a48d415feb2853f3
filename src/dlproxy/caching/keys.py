"""Cache keys: one per item, from the model, its fingerprint (version and numeric recipe: see
``ModelSpec.fingerprint``), the model parameters and the item's canonical decoded input. The same sentence gets the same key through KServe v2 and OpenAI."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import orjson

from dlproxy.types import InferenceRequest


def item_keys(
    request: InferenceRequest, fingerprint: str, parameters: dict[str, Any]
) -> list[bytes]:
    """One 16-byte key per item (row) of the request; ``fingerprint`` identifies the model's
    numbers (``ModelSpec.fingerprint``)."""
    prefix = hashlib.blake2b(digest_size=16)
    prefix.update(request.model.encode())
    prefix.update(b"\0")
    prefix.update(fingerprint.encode())
    prefix.update(b"\0")
    if parameters:
        prefix.update(orjson.dumps(parameters, option=orjson.OPT_SORT_KEYS, default=str))
    names = sorted(request.inputs)
    columns: list[tuple[bytes, list[list[bytes]] | np.ndarray]] = []
    for name in names:
        array = request.inputs[name]
        if array.dtype == object:
            columns.append((name.encode(), array.reshape(array.shape[0], -1).tolist()))
        else:
            header = f"{name}\0{array.dtype.str}\0{array.shape[1:]}".encode()
            columns.append((header, np.ascontiguousarray(array).reshape(array.shape[0], -1)))
    keys = []
    for row in range(request.items):
        h = prefix.copy()
        for header, column in columns:
            h.update(header)
            if isinstance(column, list):  # BYTES: length-prefixed so ("ab","c") != ("a","bc")
                for item in column[row]:
                    h.update(len(item).to_bytes(8, "little"))
                    h.update(item)
            else:
                h.update(column[row].tobytes())
        keys.append(h.digest())
    return keys
