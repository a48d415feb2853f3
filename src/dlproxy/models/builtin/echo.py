"""``echo``: returns its input. For tests and for measuring the proxy's own overhead.

Request parameters (per request; in a batch, the first request's win):
``delay_ms`` sleeps before answering, ``fail`` raises a model error, ``hang`` never answers.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from dlproxy.models.base import Model
from dlproxy.types import ModelSpec


class Echo(Model):
    def __init__(self, variant: str | None = None, threads: int = 1) -> None:
        self.variant = variant or "1"

    def load(self) -> None:
        self.spec = ModelSpec(
            name="echo",
            version=self.variant,
            platform="python",
            inputs=(),  # any inputs
            outputs=(),  # the same as the inputs
            max_batch_size=1024,
            parameters=("delay_ms", "fail", "hang"),
        )

    def predict(
        self, inputs: dict[str, np.ndarray], parameters: dict[str, Any]
    ) -> dict[str, np.ndarray]:
        delay_ms = float(parameters.get("delay_ms", 0) or 0)
        if delay_ms > 0:
            time.sleep(delay_ms / 1000)
        if parameters.get("fail"):
            raise RuntimeError("echo failed because the request asked it to (parameter 'fail')")
        if parameters.get("hang"):
            while True:
                time.sleep(3600)
        return dict(inputs)
