"""The model interface a worker process runs, and how a model name turns into a model.

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

from dlproxy.plugins import import_from_string
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


BUILTIN: dict[str, str] = {
    "minilm": "dlproxy.models.builtin.minilm:MiniLM",
    "echo": "dlproxy.models.builtin.echo:Echo",
    "digits": "dlproxy.models.builtin.digits:Digits",
}


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


def split_reference(reference: str) -> tuple[str, str]:
    """``"minilm:int8"`` -> ``("minilm", "int8")``; a path or ``module:Class`` keeps its colon."""
    name, sep, variant = reference.rpartition(":")
    if sep and name in BUILTIN:
        return name, variant
    return reference, ""


def model_name(reference: str) -> str:
    """The name a model is served under: the built-in name, a file's stem, or the class name."""
    name, _ = split_reference(reference)
    if name in BUILTIN:
        return name
    if (folder := _compressed_directory(name)) is not None:
        from dlproxy.models.directory import read_metadata

        return str(read_metadata(folder)["model"])
    if name.endswith(".onnx"):
        return Path(name).stem
    return name.rpartition(":")[2].lower() or name


def create_model(reference: str, threads: int = 1) -> Model:
    """A model object (not yet loaded) from ``name[:variant]``, an ``.onnx`` path or ``module:Class``."""
    name, variant = split_reference(reference)
    if name in BUILTIN:
        cls = import_from_string(BUILTIN[name])
        model: Model = cls(variant=variant or None, threads=threads)
        return model
    if (folder := _compressed_directory(name)) is not None:
        from dlproxy.models.directory import load_directory

        return load_directory(folder, threads=threads)
    if name.endswith(".onnx"):
        from dlproxy.models.onnx import OnnxFileModel

        return OnnxFileModel(Path(name), threads=threads)
    if ":" in name:
        from dlproxy.models.python import PythonClassModel

        return PythonClassModel(name)
    raise ValueError(
        f"Unknown model '{reference}': use a built-in name ({', '.join(sorted(BUILTIN))}), "
        "a path to an .onnx file, or 'module:Class'."
    )


def _compressed_directory(name: str) -> Path | None:
    """The folder ``dlproxy compress`` wrote, given as it or its ONNX file (see models/directory.py)."""
    from dlproxy.models.directory import find_directory

    return find_directory(name)
