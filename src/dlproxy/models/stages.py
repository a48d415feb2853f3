"""A model cut into consecutive stages, one per process, for model-parallel (pipelined) instances.

Stage 0 takes the model's inputs, the last stage returns its outputs, and every stage in between
maps one dict of arrays (activations) to the next. Every array's first axis need not be the item
axis in between (a stage may carry windows, masks, counts); the stage worker only moves the dicts.
Only models that know how to cut themselves can be pipelined; ``STAGED`` names them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from dlproxy.models.registry import split_reference
from dlproxy.plugins import import_from_string
from dlproxy.types import ModelSpec

Tensors = dict[str, np.ndarray]

# Built-in models that can be cut, and the class of one of their stages.
STAGED: dict[str, str] = {
    "minilm": "dlproxy.models.builtin.minilm_stages:MiniLMStage",
}


class ModelStage(ABC):
    """Stage ``index`` of ``count``: loads only its part of the model, then maps arrays to arrays."""

    spec: ModelSpec

    def __init__(self, variant: str | None, index: int, count: int, threads: int) -> None:
        self.variant = variant
        self.index = index
        self.count = count
        self.threads = max(1, int(threads))

    @property
    def first(self) -> bool:
        return self.index == 0

    @property
    def last(self) -> bool:
        return self.index == self.count - 1

    @abstractmethod
    def load(self) -> None:
        """Load this stage's part of the weights and warm it up."""

    @abstractmethod
    def run(self, tensors: Tensors, parameters: dict[str, Any]) -> Tensors:
        """Stage 0: model inputs -> activations; last stage: activations -> model outputs."""


def check_stages(reference: str, count: int) -> None:
    """Raise ValueError (with what to do instead) unless ``reference`` can run as ``count``
    stages; imports nothing heavy, so the gateway can check before it starts a process."""
    if count < 2:
        return
    name, variant = split_reference(reference)
    if name not in STAGED:
        raise ValueError(
            f"model '{reference}' cannot be split into pipeline stages; models that can: "
            f"{', '.join(sorted(STAGED))} (or use pipeline_stages 1)"
        )
    stage_class = import_from_string(STAGED[name])
    stage_class.check(variant or None, count)


def create_stage(reference: str, index: int, count: int, threads: int = 1) -> ModelStage:
    """Stage ``index`` of ``count`` of a built-in model (not yet loaded)."""
    check_stages(reference, count)
    name, variant = split_reference(reference)
    stage: ModelStage = import_from_string(STAGED[name])(variant or None, index, count, threads)
    return stage
