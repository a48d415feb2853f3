"""The model interface a worker process runs, and what every model module shares (variants,
the cache directory, file digests); ``registry.py`` turns a name into a model.

A model is loaded once per worker process and then called with whole batches. Its inputs are numpy
arrays whose first dimension is the item axis; a ``BYTES`` input is a 1-d object array of bytes.
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from dlproxy.types import ModelSpec


class Model(ABC):
    """One loaded model. ``spec`` describes it once ``load`` has run."""

    spec: ModelSpec

    @abstractmethod
    def load(self) -> None:
        """Load weights, build sessions, warm up. Runs in the worker, never in the gateway."""

    @abstractmethod
    def predict(
        self, inputs: dict[str, np.ndarray], parameters: dict[str, Any]
    ) -> dict[str, np.ndarray]:
        """Compute one batch; every output has as many rows as the inputs."""

    def close(self) -> None:  # noqa: B027  optional: most models hold nothing to release
        """Release what ``load`` took (files, connections, threads); the worker calls it last."""

    def tokens(self) -> tuple[int, int]:
        """(real, padded) tokens the last ``predict`` ran: a text model pads each run to its
        longest text, and the difference is the padding waste the batcher's lengths avoid.
        (0, 0) for a model without tokens."""
        return (0, 0)

    borrowing: bool = False
    """Set by the worker before each batch: it may run on the borrowed threads, if any."""

    def borrow_threads(self, threads: int) -> bool:
        """Get ready to compute a batch on ``threads`` intra-op threads, more than the instance's
        own: the cores of the gateway's other workers while they are idle. ``predict`` then uses
        them while ``borrowing`` is set, with the same results (the arithmetic of each row must
        not depend on the thread count). True if the model can; the default keeps its threads."""
        return False


def choose_variant(model: str, variant: str | None, variants: tuple[str, ...], default: str) -> str:
    """``variant`` (or ``default``) if ``model`` has it; else an error that lists the ones it has."""
    chosen = variant or default
    if chosen not in variants:
        raise ValueError(
            f"Unknown {model} variant '{chosen}'; choose one of: {', '.join(variants)}."
        )
    return chosen


def home() -> Path:
    """Where exported models are cached: ``$DLPROXY_HOME`` or the user cache directory."""
    configured = os.environ.get("DLPROXY_HOME")
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dlproxy"


def file_digest(path: Path) -> str:
    """A digest of a file's bytes: a model file's numeric identity (``ModelSpec.recipe``), so a
    replaced file never shares cache entries with the one before."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
