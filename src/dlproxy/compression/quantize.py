"""Lower-precision copies of an ONNX graph with ONNX Runtime's tools: int8 (dynamic, static), fp16.

- ``int8``: per-row dynamic quantization (``dlproxy.models.rowwise``): int8 weights per output
  channel, activations quantized at run time with one scale per row, so an item's result does not
  depend on its batch. This is how the built-in ``minilm:int8`` is made.
- ``int8-dynamic``: ONNX Runtime's dynamic quantization, QInt8 weights per output channel;
  activations quantized at run time with one scale for the whole batch, so an item's result
  depends on the other items (and the padding) of its batch. Kept for comparison.
- ``int8-static``: weights and activations quantized ahead of time, in QDQ format, with ranges
  calibrated on real inputs (a ``CalibrationDataReader`` over them). Only MatMul, Gemm and Conv
  with constant weights are quantized, and the caller may keep some in float (minilm keeps its
  FFN down-projections: their inputs have outliers that wreck a per-tensor activation scale).
- ``fp16``: weights and arithmetic in float16, inputs and outputs kept float32 so that callers
  need not change. It runs on the CPU provider and halves the file, but on this x86 machine
  it is no faster than fp32 (measured: docs/benchmarks.md); fp16 pays on GPUs.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dlproxy.logging import quiet_logger

Feeds = dict[str, np.ndarray]


def quantize_dynamic_int8(source: Path, target: Path) -> None:
    """ONNX Runtime's dynamic int8 with per-channel 7-bit QInt8 weights (batch-dependent)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet_logger():  # "consider pre-processing": advice meant for static quantization
        quantize_dynamic(
            source, target, per_channel=True, reduce_range=True, weight_type=QuantType.QInt8
        )


def quantize_static_int8(
    source: Path, target: Path, calibration: Sequence[Feeds], exclude: Sequence[str] = ()
) -> None:
    """Static int8 (QDQ) with activation ranges calibrated on ``calibration`` batches.

    Weights QInt8 per channel in a 7-bit range (see ``models.rowwise``); activations QUInt8 with a zero point (asymmetric: GELU and
    attention outputs are far from symmetric). Only MatMuls with a constant weight are quantized;
    ``exclude`` names nodes to leave in float (see ``matmuls_reading``).
    """
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not calibration:
        raise ValueError("Static quantization needs at least one calibration batch.")
    with tempfile.TemporaryDirectory(prefix="dlproxy-quantize-") as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        with quiet_logger():
            # Shape inference and graph cleanup first, as ONNX Runtime recommends for static mode.
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            quantize_static(
                prepared,
                target,
                Batches(calibration),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=["MatMul", "Gemm", "Conv"],
                nodes_to_exclude=list(exclude),
                per_channel=True,
                reduce_range=True,  # 7-bit weights: no int16 saturation on non-VNNI x86
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={"MatMulConstBOnly": True},
            )


def matmuls_reading(path: Path, features: int) -> list[str]:
    """Names of the MatMul nodes whose constant weight has ``features`` input rows.

    For a BERT encoder with ``features`` = intermediate size, these are the FFN down-projections:
    their inputs (GELU outputs) have outlier ranges that one int8 scale per tensor cannot hold.
    Leaving them in float is what takes static int8 from mean cosine 0.94 to 0.99 on minilm.
    """
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    rows = {init.name: tuple(init.dims) for init in graph.initializer}
    return [
        node.name
        for node in graph.node
        if node.op_type == "MatMul" and rows.get(node.input[1], (0,))[0] == features
    ]


def convert_fp16(source: Path, target: Path) -> None:
    """float16 weights and ops, float32 inputs and outputs."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(source))
    with quiet_logger():
        converted = convert_float_to_float16(model, keep_io_types=True)
    onnx.save(converted, str(target))


class Batches:
    """An ONNX Runtime ``CalibrationDataReader`` over batches of graph inputs, read once."""

    def __init__(self, batches: Sequence[Feeds]) -> None:
        self._batches = list(batches)
        self._next = 0

    def get_next(self) -> Feeds | None:
        """The next batch, or ``None`` when all have been read."""
        if self._next >= len(self._batches):
            return None
        self._next += 1
        return self._batches[self._next - 1]

    def rewind(self) -> None:
        """Start again from the first batch (the calibrator may read twice)."""
        self._next = 0
