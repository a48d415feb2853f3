"""``dlproxy compress MODEL --method M --out DIR``: a cheaper servable variant and what it costs.

Methods: ``int8`` (per-row dynamic activations, per-channel weights: batch-invariant),
``int8-dynamic`` (ONNX Runtime's dynamic quantization: one activation scale per batch, so NOT
batch-invariant), ``int8-static`` (QDQ, calibrated), ``fp16``,
``prune:AMOUNT`` (zero the smallest AMOUNT of each Linear weight) and ``structured-prune:AMOUNT``
(remove AMOUNT of the attention heads and FFN neurons of every layer). Pruning is not followed by
fine-tuning. DIR receives ``model.onnx`` and ``dlproxy.json``; ``dlproxy serve --model DIR`` (or
``DIR/model.onnx``) serves it under the model's own name, with the method as its version.

``--json OUT`` writes one object with the keys:
``model``, ``method``, ``out``, ``threads``;
``original`` and ``compressed``: ``file_bytes``, ``throughput`` (items/s at batch 32, decoding and
tokenizing included), ``latency_p50_ms`` (batch 1);
``speedup`` (compressed / original throughput), ``size_ratio``, ``latency_ratio``;
``quality``: ``cosine_mean`` and ``cosine_min`` to the original (minilm), or ``accuracy`` and
``original_accuracy`` in percent on the test split (digits);
``batch_invariance``: ``original_max_difference`` and ``max_difference`` (largest element
difference between an item computed alone and in a batch of 32) and ``invariant`` (<= 1e-5);
``details``: what the method did (pruning: ``parameters_before``, ``parameters_after``,
``linear_sparsity``, ``fine_tuned``, and ``heads_per_layer``, ``ffn_width`` when structured;
int8-static: ``calibration_items``, ``nodes_left_in_float``);
``seconds``: the whole run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlproxy.compression import report as reporting
from dlproxy.console import Bar

if TYPE_CHECKING:  # the adapters import the model code: loaded when a command runs, not before
    from dlproxy.compression.adapters import Adapter

KINDS: tuple[str, ...] = (
    "int8",
    "int8-dynamic",
    "int8-static",
    "fp16",
    "prune",
    "structured-prune",
)
PRUNING: tuple[str, ...] = ("prune", "structured-prune")
METHOD_HELP = "int8, int8-dynamic, int8-static, fp16, prune:AMOUNT or structured-prune:AMOUNT"


@dataclass(frozen=True, slots=True)
class Method:
    """A parsed ``--method``: its kind and, for pruning, the fraction to remove."""

    kind: str
    amount: float | None = None

    def __str__(self) -> str:
        return self.kind if self.amount is None else f"{self.kind}:{self.amount:g}"

    @property
    def version(self) -> str:
        """The served version string: no colon, since it may appear in a URL path."""
        return str(self).replace(":", "-")


def parse_method(text: str) -> Method:
    """``"prune:0.5"`` -> ``Method("prune", 0.5)``; anything else gets an error saying what is."""
    kind, sep, amount = text.strip().partition(":")
    if kind not in KINDS:
        raise ValueError(f"Unknown method '{text}': choose {METHOD_HELP}.")
    if kind not in PRUNING:
        if sep:
            raise ValueError(f"Method '{kind}' takes no amount, got '{text}'.")
        return Method(kind)
    if not re.fullmatch(r"\d*\.?\d+", amount):
        raise ValueError(
            f"Method '{kind}' needs the fraction to remove, e.g. {kind}:0.25; got '{text}'."
        )
    value = float(amount)
    if not 0.0 < value < 1.0:
        raise ValueError(f"The amount of '{text}' must be between 0 and 1 (exclusive).")
    return Method(kind, value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__  # the methods and the --json keys, in --help
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "model", metavar="MODEL", help="built-in model to compress (minilm, digits)"
    )
    parser.add_argument(
        "--method", required=True, type=_method_argument, metavar="METHOD", help=METHOD_HELP
    )
    parser.add_argument(
        "--out", required=True, type=Path, metavar="DIR", help="where model.onnx goes"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="intra-op threads while measuring (default 1)"
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="alternating timing rounds (best kept; default 5)"
    )
    parser.add_argument("--json", metavar="OUT", help="write the report as one JSON object")


def run(args: argparse.Namespace) -> int:
    """The CLI entry: bad input is one line on stderr and exit status 2."""
    if args.threads < 1 or args.rounds < 1:
        print("dlproxy compress: --threads and --rounds must be at least 1.", file=sys.stderr)
        return 2
    from dlproxy.compression.adapters import adapter_for

    try:
        adapter = adapter_for(args.model)
    except ValueError as exc:
        print(f"dlproxy compress: {exc}", file=sys.stderr)
        return 2
    try:
        result = compress(adapter, args.method, args.out, args.threads, args.rounds, progress=True)
    except ValueError as exc:  # e.g. a method this model does not support
        print(f"dlproxy compress: {exc}", file=sys.stderr)
        return 2
    reporting.print_report(result)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(result.to_dict(), out, indent=2)
            out.write("\n")
    return 0


def compress(
    adapter: Adapter,
    method: Method,
    out: Path,
    threads: int = 1,
    rounds: int = 5,
    progress: bool = False,
    measure: bool = True,
) -> reporting.Report:
    """Write the variant into ``out``, then measure it against the original (unless not asked)."""
    from dlproxy.models.registry import create_model

    started = time.perf_counter()
    total = 4 + (reporting.parts(rounds) + 1 if measure else 0)
    with Bar(f"{adapter.name}: {method}", total, enabled=progress, transient=True) as bar:
        step = bar.step
        step("exporting the original")
        source = adapter.original_onnx()
        step(f"compressing ({method})")
        out.mkdir(parents=True, exist_ok=True)
        target = out / "model.onnx"
        details = _write_atomically(target, lambda tmp: apply(adapter, method, source, tmp))
        _write_metadata(out, adapter, method, details)
        step("loading both models")
        original = create_model(adapter.original, threads=threads)
        compressed = create_model(str(out), threads=threads)
        original.load()
        compressed.load()
        if not measure:
            zero = reporting.Measurement(0, 0.0, 0.0)
            figures = (zero, zero)
        else:
            step("timing")
            figures = reporting.measure(
                original,
                compressed,
                adapter.workload(),
                (source, target),
                rounds=rounds,
                tick=lambda: step(None),
            )
        step("scoring quality")
        quality = adapter.quality(original, compressed)
        invariance = reporting.batch_invariance(original, compressed, adapter.workload())
    return reporting.Report(
        model=adapter.name,
        method=str(method),
        out=str(out),
        threads=threads,
        original=figures[0],
        compressed=figures[1],
        quality=quality,
        details=details,
        batch_invariance=invariance,
        seconds=time.perf_counter() - started,
    )


def apply(adapter: Adapter, method: Method, source: Path, target: Path) -> dict[str, Any]:
    """Write the compressed graph to ``target``; returns what was done, for the report."""
    from dlproxy.compression import prune, quantize
    from dlproxy.models.rowwise import quantize_rowwise

    if method.kind == "int8":
        count = quantize_rowwise(source, target)
        return {
            "weights": "int8 per channel",
            "activations": "int8, dynamic per row",
            "matmuls_quantized": count,
        }
    if method.kind == "int8-dynamic":
        quantize.quantize_dynamic_int8(source, target)
        return {"weights": "int8 per channel", "activations": "int8, dynamic per batch"}
    if method.kind == "int8-static":
        batches = adapter.calibration()
        exclude = adapter.quantize_exclude(source)
        quantize.quantize_static_int8(source, target, batches, exclude)
        return {
            "calibration_items": sum(len(next(iter(b.values()))) for b in batches),
            "nodes_left_in_float": len(exclude),
        }
    if method.kind == "fp16":
        quantize.convert_fp16(source, target)
        return {"weights": "fp16", "inputs_outputs": "fp32"}
    assert method.amount is not None  # parse_method guarantees it for pruning
    module = adapter.module()
    if method.kind == "prune":
        stats = prune.prune_unstructured(module, method.amount)
    else:
        stats = adapter.prune_structured(module, method.amount)
    adapter.export(module, target)
    details: dict[str, Any] = {
        "parameters_before": stats.parameters_before,
        "parameters_after": stats.parameters_after,
        "linear_sparsity": round(stats.sparsity, 4),
    }
    if method.kind == "structured-prune":
        details["heads_per_layer"] = f"{stats.heads[0]} -> {stats.heads[1]}"
        details["ffn_width"] = f"{stats.intermediate[0]} -> {stats.intermediate[1]}"
    details["fine_tuned"] = False
    return details


def _write_metadata(out: Path, adapter: Adapter, method: Method, details: dict[str, Any]) -> None:
    """``dlproxy.json``: what serving needs (model, version, file) and how the file was made."""
    metadata = {
        "model": adapter.name,
        "version": method.version,
        "file": "model.onnx",
        "method": str(method),
        "source": adapter.original,
        "details": details,
    }
    (out / "dlproxy.json").write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")


def _write_atomically(target: Path, write: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """Write into a temp file beside ``target`` then rename: a reader never sees half a file."""
    handle, name = tempfile.mkstemp(prefix=".model-", suffix=".onnx", dir=target.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        details = write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return details


def _method_argument(text: str) -> Method:
    try:
        return parse_method(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
