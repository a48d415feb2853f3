"""How a model reference turns into a model: a built-in name (with a variant), a ``dlproxy
compress`` directory, a sentence-transformers directory (``models/embedder.py``), an ``.onnx``
file, or ``module:Class``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dlproxy.models.base import Model
from dlproxy.plugins import import_from_string

BUILTIN: dict[str, str] = {
    "minilm": "dlproxy.models.builtin.minilm:MiniLM",
    "echo": "dlproxy.models.builtin.echo:Echo",
    "digits": "dlproxy.models.builtin.digits:Digits",
}


EXTRAS = {"minilm": "minilm", "digits": "digits"}
"""The extra each built-in needs to be prepared (its export or training); echo needs none."""


def extra_for(reference: str) -> str | None:
    """The extra a model reference needs beyond the core, if it names one."""
    name, _ = split_reference(reference)
    return EXTRAS.get(name)


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
    if _embedding_directory(name):
        return Path(name).resolve().name.lower()
    if name.endswith(".onnx"):
        return Path(name).stem
    return name.rpartition(":")[2].lower() or name


def create_model(reference: str, threads: int = 1, options: dict[str, Any] | None = None) -> Model:
    """A model object (not yet loaded) from ``name[:variant]``, an ``.onnx`` path or ``module:Class``."""
    name, variant = split_reference(reference)
    if name in BUILTIN:
        cls = import_from_string(BUILTIN[name])
        model: Model = cls(variant=variant or None, threads=threads)
        return model
    if (folder := _compressed_directory(name)) is not None:
        from dlproxy.models.directory import load_directory

        return load_directory(folder, threads=threads)
    if _embedding_directory(name):
        from dlproxy.models.embedder import EmbeddingDirectory

        return EmbeddingDirectory(Path(name), threads=threads, name=model_name(name))
    if name.endswith(".onnx"):
        from dlproxy.models.onnx import OnnxFileModel

        return OnnxFileModel(Path(name), threads=threads)
    if ":" in name:
        from dlproxy.models.python import PythonClassModel

        return PythonClassModel(name, threads=threads, options=options)
    raise ValueError(
        f"Unknown model '{reference}': use a built-in name ({', '.join(sorted(BUILTIN))}), "
        "a path to an .onnx file, a sentence-transformers directory, or 'module:Class'."
    )


def _compressed_directory(name: str) -> Path | None:
    """The folder ``dlproxy compress`` wrote, given as it or its ONNX file (see models/directory.py)."""
    from dlproxy.models.directory import find_directory

    return find_directory(name)


def _embedding_directory(name: str) -> bool:
    """Whether ``name`` is a sentence-transformers directory (see models/embedder.py)."""
    from dlproxy.models.embedder import is_embedding_directory

    return is_embedding_directory(Path(name))
