"""A model directory written by ``dlproxy compress``: ``model.onnx`` plus ``dlproxy.json``.

The ONNX file alone is not enough to serve a compressed ``minilm``: its graph takes token ids, and
the tokenizer lives with the built-in model. ``dlproxy.json`` says which built-in model the graph
is a variant of, so the directory (or its ``model.onnx``) is served under that model's name, with
its pre- and post-processing, and the compression method as its version::

    {"model": "minilm", "version": "int8-static", "file": "model.onnx", ...}

Any other model name (a digits student, say) is served as a plain ONNX file under the name and
version ``dlproxy.json`` gives.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from dlproxy.models.base import Model, file_digest
from dlproxy.models.builtin.minilm import RECIPE, MiniLM
from dlproxy.models.onnx import OnnxFileModel

METADATA = "dlproxy.json"


def find_directory(reference: str) -> Path | None:
    """The model directory ``reference`` points to (the folder or its ONNX file), if it is one."""
    path = Path(reference)
    folder = path if path.is_dir() else path.parent if path.suffix == ".onnx" else None
    if folder is not None and (folder / METADATA).is_file():
        return folder
    return None


def read_metadata(folder: Path) -> dict[str, Any]:
    """``dlproxy.json`` of ``folder``, checked for the keys serving needs."""
    where = folder / METADATA
    try:
        metadata = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"Cannot read {where}: {exc}") from None
    missing = [key for key in ("model", "version", "file") if key not in metadata]
    if missing:
        raise ValueError(f"{where} lacks the key(s) {', '.join(missing)}.")
    inside = folder.resolve()
    if not (inside / str(metadata["file"])).resolve().is_relative_to(inside):
        raise ValueError(f"{where}: 'file' must name a file in {folder}, got {metadata['file']!r}")
    return dict(metadata)


def load_directory(folder: Path, threads: int = 1) -> Model:
    """The model (not yet loaded) that serves ``folder``'s graph as its built-in model would."""
    metadata = read_metadata(folder)
    path = folder / str(metadata["file"])
    name, version = str(metadata["model"]), str(metadata["version"])
    if name == "minilm":
        return MiniLMFile(path, version, threads)
    return NamedOnnxModel(path, name, version, threads)


class MiniLMFile(MiniLM):
    """``minilm`` running a given ONNX graph (same inputs and output) instead of its own export."""

    def __init__(self, path: Path, version: str, threads: int = 1) -> None:
        super().__init__("fp32", threads)
        self.path = path
        self.spec = replace(self.spec, version=version)

    def onnx_file(self) -> Path:
        """The directory's graph: nothing is exported."""
        if not self.path.is_file():
            raise FileNotFoundError(f"No ONNX file at {self.path}.")
        return self.path

    def load(self) -> None:
        """As ``MiniLM``; the recipe is the graph's digest (and minilm's session recipe)."""
        super().load()
        self.spec = replace(self.spec, recipe=f"minilm-file/r{RECIPE}/{file_digest(self.path)}")


class NamedOnnxModel(OnnxFileModel):
    """A plain ONNX file served under a given name and version."""

    def __init__(self, path: Path, name: str, version: str, threads: int = 1) -> None:
        super().__init__(path, threads)
        self.name, self.version = name, version

    def load(self) -> None:
        """As ``OnnxFileModel``, then take the directory's name and version."""
        super().load()
        self.spec = replace(self.spec, name=self.name, version=self.version)
