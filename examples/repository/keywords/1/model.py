"""A worked dlproxy.PythonModel: how much of each text is made of given keywords.

Served from this repository (the version folder holds its own code, as Triton's Python backend):

    dlproxy serve --model-repository examples/repository --admin-loopback
    curl -s localhost:8000/v2/models/keywords/infer -d '{"inputs": [{"name": "text",
      "shape": [2], "datatype": "BYTES", "data": ["a fast proxy", "slow"]}]}'

``model.json`` names the class and gives its options (``setup`` receives them); a request may
pass ``"parameters": {"case_sensitive": true}``; ``close`` runs when the worker stops.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

import dlproxy


class Keywords(dlproxy.PythonModel):
    """``text`` (BYTES, [n]) -> ``score`` (FP32, [n]): the share of its words that are keywords."""

    inputs = [("text", "BYTES", (-1,))]
    outputs = [("score", "FP32", (-1,))]
    max_batch_size = 64
    recipe = "keywords/1"  # part of the cache keys: change it when the scores change

    def setup(self, threads: int, options: dict[str, Any]) -> None:
        self.keywords = [str(word) for word in options.get("keywords", [])]
        self.lowered = {word.lower() for word in self.keywords}
        self.close_marker = options.get("close_marker")  # a file written by close(), for tests

    def predict(
        self, batch: dict[str, np.ndarray], parameters: dict[str, Any]
    ) -> dict[str, np.ndarray]:
        exact = bool(parameters.get("case_sensitive", False))
        wanted = set(self.keywords) if exact else self.lowered
        scores = []
        for item in batch["text"]:
            words = bytes(item).decode("utf-8").split()
            words = words if exact else [word.lower() for word in words]
            scores.append(sum(word in wanted for word in words) / max(1, len(words)))
        return {"score": np.asarray(scores, dtype=np.float32)}

    def close(self) -> None:
        if self.close_marker:
            Path(self.close_marker).write_text("closed")
