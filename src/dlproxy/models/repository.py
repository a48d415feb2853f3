"""A model repository: ``DIR/<name>/<version>/``, the layout Triton users know.

Each model is a folder; each numeric subfolder is a version, holding anything ``--model`` takes:

- ``model.onnx``, an ONNX graph;
- ``dlproxy.json`` (+ its graph), a ``dlproxy compress`` output;
- ``modules.json`` (+ tokenizer, pooling, ``onnx/model.onnx``), a sentence-transformers directory;
- ``model.json``, ``{"model": "<any --model reference>"}`` (a built-in such as ``minilm:int8``, or
  ``package.module:Class``); a relative path in it is read from the version folder, and
  ``model:Class`` with a ``model.py`` beside it is that file's class (as Triton's Python backend);
  ``"options": {...}`` reach a ``dlproxy.PythonModel``'s ``setup``.

``DIR/<name>/config.json`` (optional) sets the model's ``version_policy`` (``{"latest": N}``,
Triton's default ``{"latest": 1}``; ``{"all": true}``; ``{"specific": ["1", "3"]}``), its
``default_version`` (else the newest served), its ``traffic`` between versions (weights,
``{"1": 95, "2": 5}``: a canary), a ``shadow`` version that also gets a share of the requests
(``{"version": "2", "percent": 10}``), and serving settings of its own (``MODEL_SETTINGS``) that
override the server's for this model only.

Scanning never raises for a bad entry: it is reported with its reason (``Entry.error``) and the
other models are served. Nothing outside the repository is read: a name, a version or a path in
``model.json`` that resolves outside ``DIR`` (``..``, a symlink out) is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlproxy.traffic import Split

CONFIG = "config.json"
MODEL_SETTINGS = frozenset(
    {
        "instances",
        "threads",
        "policy",
        "weights",
        "max_batch",
        "max_delay_ms",
        "batching",
        "slo_ms",
        "pipeline_depth",
        "max_queue",
        "max_queue_wait_ms",
        "hang_timeout_s",
        "autoscale",
        "scale_options",
        "min_instances",
        "max_instances",
        "scale_down_cooldown_s",
        "cache",
    }
)
"""Settings a model's config may set for itself (the rest are the server's)."""
OWN_KEYS = frozenset({"version_policy", "default_version", "traffic", "shadow"})
"""The other keys of a model's config: which versions serve, and how traffic reaches them."""


@dataclass(frozen=True)
class Version:
    """One version folder: what to serve (a ``--model`` reference), or why it cannot be."""

    number: str
    reference: str = ""
    error: str = ""
    options: str = ""  # a Python model's options, JSON (model.json "options")


@dataclass(frozen=True)
class Entry:
    """One model of the repository: its versions, which of them to serve, and its settings."""

    name: str
    versions: tuple[Version, ...] = ()
    served: tuple[str, ...] = ()
    default: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    split: Split | None = None


def scan(root: Path) -> list[Entry]:
    """Every model folder of ``root``, by name; bad ones carry their reason."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"model repository {root} is not a directory")
    base = root.resolve()
    entries = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            entries.append(read_entry(base, folder))
        except ValueError as exc:
            entries.append(Entry(folder.name, error=str(exc)))
    return entries


def read_entry(base: Path, folder: Path) -> Entry:
    """One model folder; ValueError when the model as a whole cannot be served."""
    _inside(base, folder)
    config = _read_json(folder / CONFIG) if (folder / CONFIG).is_file() else {}
    if not isinstance(config, dict):
        raise ValueError(f"{folder / CONFIG} must hold an object")
    unknown = set(config) - MODEL_SETTINGS - OWN_KEYS
    if unknown:
        raise ValueError(
            f"{folder / CONFIG}: unknown key(s) {sorted(unknown)}; a model may set "
            f"{', '.join(sorted(OWN_KEYS))} and {', '.join(sorted(MODEL_SETTINGS))}"
        )
    numbers = sorted((p.name for p in folder.iterdir() if p.is_dir() and p.name.isdigit()), key=int)
    if not numbers:
        raise ValueError(f"{folder} has no version folder (1/, 2/, ...)")
    versions = tuple(_version(base, folder / number) for number in numbers)
    servable = [v.number for v in versions if not v.error]
    served = _policy(config.get("version_policy", {"latest": 1}), servable, folder)
    default = str(config.get("default_version") or (served[-1] if served else ""))
    if default and default not in served:
        raise ValueError(
            f"{folder / CONFIG}: default_version {default} is not among the versions served "
            f"({', '.join(served) or 'none'})"
        )
    settings = {k: v for k, v in config.items() if k in MODEL_SETTINGS}
    split = _split(config, served, folder / CONFIG)
    return Entry(folder.name, versions, tuple(served), default, settings, split=split)


def _split(config: dict[str, Any], served: list[str], path: Path) -> Split | None:
    """The ``traffic`` and ``shadow`` keys of a model's config, between served versions."""
    traffic = config.get("traffic", {})
    shadow = config.get("shadow")
    if not traffic and shadow is None:
        return None
    if not isinstance(traffic, dict) or not all(
        isinstance(w, int | float) and not isinstance(w, bool) for w in traffic.values()
    ):
        raise ValueError(f'{path}: traffic must be {{"<version>": weight, ...}}, got {traffic!r}')
    if shadow is not None and (
        not isinstance(shadow, dict)
        or set(shadow) != {"version", "percent"}
        or not isinstance(shadow["percent"], int | float)
    ):
        raise ValueError(
            f'{path}: shadow must be {{"version": "2", "percent": 10}}, got {shadow!r}'
        )
    weights = {str(v): float(w) for v, w in traffic.items()}
    named = set(weights) | ({str(shadow["version"])} if shadow else set())
    missing = sorted(named - set(served))
    if missing:
        raise ValueError(
            f"{path}: traffic names version(s) {missing} that are not served "
            f"(served: {', '.join(served) or 'none'})"
        )
    try:
        return Split(
            weights,
            str(shadow["version"]) if shadow else "",
            float(shadow["percent"]) / 100 if shadow else 0.0,
        )
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def _version(base: Path, folder: Path) -> Version:
    try:
        _inside(base, folder)
        reference = _reference(base, folder)
        return Version(folder.name, reference, options=_options(folder, reference))
    except ValueError as exc:
        return Version(folder.name, error=str(exc))


def _options(folder: Path, reference: str) -> str:
    """The ``options`` table of ``model.json`` (for a Python model's ``setup``), as JSON."""
    if not (folder / "model.json").is_file():
        return ""
    options = _read_json(folder / "model.json").get("options")
    if options is None:
        return ""
    if not isinstance(options, dict):
        raise ValueError(f'{folder / "model.json"}: "options" must be an object')
    from dlproxy.models.registry import BUILTIN

    if ":" not in reference or reference.split(":")[0] in BUILTIN:
        raise ValueError(
            f'{folder / "model.json"}: "options" are for Python models (module:Class), '
            f"not {reference}"
        )
    return json.dumps(options, sort_keys=True)


def _reference(base: Path, folder: Path) -> str:
    """What in a version folder ``--model`` would take."""
    if (folder / "model.json").is_file():
        described = _read_json(folder / "model.json")
        reference = described.get("model") if isinstance(described, dict) else None
        if not isinstance(reference, str) or not reference:
            raise ValueError(f'{folder / "model.json"} must be {{"model": "<reference>"}}')
        if reference.endswith(".onnx") or "/" in reference:
            return str(_inside(base, folder / reference))
        module, sep, attribute = reference.rpartition(":")
        if sep and (folder / f"{module}.py").is_file():  # the folder's own code: model.py
            return f"{_inside(base, folder / f'{module}.py')}:{attribute}"
        return reference
    for marker in ("dlproxy.json", "modules.json"):
        if (folder / marker).is_file():
            return str(folder)
    if (folder / "model.onnx").is_file():
        return str(_inside(base, folder / "model.onnx"))
    raise ValueError(
        f"{folder} holds nothing to serve: put model.onnx, a dlproxy compress output, a "
        "sentence-transformers directory, or model.json naming a model"
    )


def _policy(policy: Any, servable: list[str], folder: Path) -> list[str]:
    """The versions a version policy serves, oldest first."""
    if not isinstance(policy, dict) or len(policy) != 1:
        raise ValueError(
            f'{folder / CONFIG}: version_policy must be {{"latest": N}}, {{"all": true}} or '
            f'{{"specific": ["1", ...]}}, got {policy!r}'
        )
    ((kind, value),) = policy.items()
    if kind == "latest" and type(value) is int and value >= 1:
        return servable[-value:]
    if kind == "all" and value is True:
        return servable
    if kind == "specific" and isinstance(value, list):
        wanted = [str(v) for v in value]
        missing = [v for v in wanted if v not in servable]
        if missing:
            raise ValueError(f"{folder}: version(s) {missing} asked for are missing or broken")
        return sorted(wanted, key=int)
    raise ValueError(f"{folder / CONFIG}: version_policy {policy!r} is not understood")


def _inside(base: Path, path: Path) -> Path:
    """``path`` resolved (symlinks followed), if it is inside the repository."""
    resolved = path.resolve()
    if resolved != base and base not in resolved.parents:
        raise ValueError(f"{path} leads outside the model repository ({base}): refused")
    return resolved


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} cannot be read: {exc}") from None
