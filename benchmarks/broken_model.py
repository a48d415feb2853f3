"""A model that misbehaves on request, for the hostile reliability run: a text ``wrong rows``
makes it answer one row short, a text ``die`` kills its worker (a query of death)."""

from __future__ import annotations

import os
from typing import Any, ClassVar

import numpy as np

import dlproxy


class Broken(dlproxy.PythonModel):
    name = "broken"
    inputs: ClassVar[list[tuple[str, str, tuple[int, ...]]]] = [("text", "BYTES", (-1,))]
    outputs: ClassVar[list[tuple[str, str, tuple[int, ...]]]] = [("length", "INT64", (-1,))]
    parameters: ClassVar[tuple[str, ...] | None] = ()

    def predict(self, batch: dict[str, np.ndarray], parameters: dict[str, Any]) -> dict[str, Any]:
        texts = list(batch["text"])
        if b"die" in texts:
            os._exit(1)
        lengths = np.array([len(text) for text in texts], np.int64)
        if b"wrong rows" in texts:
            return {"length": lengths[:-1]}
        return {"length": lengths}
