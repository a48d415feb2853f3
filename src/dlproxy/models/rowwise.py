"""Batch-invariant int8: every row (token) of an activation is quantized with a scale of its own.

ONNX Runtime's dynamic quantization computes one activation scale over the whole input tensor, so
an item's result depends on the other items (and the padding) of its batch: measured on minilm, a
sentence alone vs in a batch of 32 differs by up to 0.037 per element. This rewrite keeps each
row's arithmetic independent of the other rows:

- weights: int8 in a 7-bit range (-63..63), symmetric, one scale per output column (computed
  once, here). On x86 CPUs without VNNI (AVX2, AVX-512F) ONNX Runtime's u8 x s8 kernel adds
  pairs of products in int16 and saturates past 32767: with 8-bit weights a minilm embedding
  drifted to cosine 0.991 of float on an AVX2 EPYC, and a test graph was 23% off. 2 x 255 x 63
  stays below 32767 on every CPU, so one file gives the same numbers everywhere;
- activations: at run time, per row, ``scale = max|row| / 127``, then uint8 with zero point 128
  (symmetric around it: the VNNI/AMX u8 x s8 kernels are the fast ones);
- ``MatMulIntegerToFloat`` (int32 accumulation, per-column weight scale) then one multiply by the
  row scale. Integer accumulation is exact, so a row's output does not depend on the batch size.

Only ``MatMul`` nodes with a constant 2-d weight (and ``Gemm`` nodes as torch exports a
``Linear``: constant weight and bias, no transposed input, unit alpha and beta) are rewritten;
attention's activation-by-activation products and convolutions stay float. Large constant lookup tables (``Gather`` of a word embedding)
are stored as int8 with one scale per row, dequantized after the lookup: each token's row is
its own, so this too is independent of the batch, and it is most of minilm's file. MatMuls that read the same tensor (a BERT layer's Q, K and V) share one
quantized input and run as one MatMul split afterwards: fewer, larger kernels. GELU is fused first
(``BiasGelu``) with ONNX Runtime's transformer optimizer, because the exporter's erf pattern is
left as six separate ops otherwise. The result needs opset 21 (blocked ``QuantizeLinear``).
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from dlproxy.logging import quiet_logger

OPSET = 21  # blocked QuantizeLinear: one scale per row in one op
ZERO_POINT = 128


def quantize_rowwise(source: Path, target: Path) -> int:
    """Write the per-row int8 version of ``source`` to ``target``; return the MatMuls rewritten."""
    import onnx

    model = onnx.load(str(source))
    if any(node.op_type == "Erf" for node in model.graph.node):  # an unfused GELU
        with tempfile.TemporaryDirectory(prefix="dlproxy-rowwise-") as scratch:
            model = onnx.load(str(_fused(source, Path(scratch) / "fused.onnx")))
    count = rewrite(model)
    if count == 0:
        raise ValueError(f"{source} has no MatMul with a constant 2-d weight to quantize.")
    onnx.save(model, str(target))
    return count


def rewrite(model: Any) -> int:
    """Rewrite ``model`` (an ``onnx.ModelProto``) in place; return the MatMuls rewritten."""
    from onnx import helper

    graph = model.graph
    _check_opset(model)
    weights = {init.name: init for init in graph.initializer}
    groups: dict[str, list[Any]] = defaultdict(list)
    for node in graph.node:
        if node.input and node.input[0] in weights:
            continue
        if node.op_type == "MatMul" and _constant_matrix(weights.get(node.input[1])):
            groups[node.input[0]].append(node)
        elif node.op_type == "Gemm" and _linear_gemm(node, weights):
            groups[f"{node.input[0]}\0{node.name}"].append(node)  # a group of its own
    if not groups:
        return 0
    first = {members[0].name: source for source, members in groups.items()}
    grouped = {node.name for members in groups.values() for node in members}
    builder = _Builder()
    nodes: list[Any] = []
    for node in graph.node:
        if node.name in first:
            nodes.extend(builder.quantized_group(groups[first[node.name]], weights))
        elif _table_lookup(node, weights):
            nodes.extend(builder.quantized_lookup(node, weights))
        elif node.name not in grouped:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept + builder.initializers)
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = OPSET
    if not any(opset.domain == "com.microsoft" for opset in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return sum(len(members) for members in groups.values())


MIN_TABLE_ELEMENTS = 1 << 16  # smaller lookup tables stay float: they save nothing worth a node


WEIGHT_LEVELS = 63
"""Largest weight magnitude: 7 bits, so that no CPU's int16 pair sum saturates (module doc)."""


def quantize_weight(
    weight: np.ndarray, levels: int = WEIGHT_LEVELS
) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per output column, ``-levels..levels``: ``(int8 weight, float32 scale per
    column)``."""
    peak = np.maximum(np.abs(weight).max(axis=0), np.float32(1e-12))
    scale = peak / np.float32(levels)
    quantized = np.clip(np.round(weight / scale), -levels, levels).astype(np.int8)
    return quantized, scale.astype(np.float32)


class _Builder:
    """Makes the nodes and constants of the rewrite, with names that never clash."""

    def __init__(self) -> None:
        self.initializers: list[Any] = []
        self._groups = 0
        self._shared = False

    def constant(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def quantized_lookup(self, node: Any, weights: dict[str, Any]) -> list[Any]:
        """Gather int8 rows and their scales, then multiply: the lookup of an int8 table."""
        from onnx import TensorProto, helper, numpy_helper

        prefix = f"rowwise_{self._groups}"
        self._groups += 1
        table = numpy_helper.to_array(weights[node.input[0]]).astype(np.float32)
        # One scale per row of the table; a lookup multiplies nothing, so all 8 bits are safe.
        quantized, scale = quantize_weight(table.T, levels=127)
        rows = self.constant(f"{prefix}_table", np.ascontiguousarray(quantized.T))
        scales = self.constant(f"{prefix}_table_scale", scale.reshape(-1, 1))
        ids = node.input[1]
        return [
            helper.make_node("Gather", [rows, ids], [f"{prefix}_rows"], axis=0),
            helper.make_node("Gather", [scales, ids], [f"{prefix}_scales"], axis=0),
            helper.make_node("Cast", [f"{prefix}_rows"], [f"{prefix}_float"], to=TensorProto.FLOAT),
            helper.make_node("Mul", [f"{prefix}_float", f"{prefix}_scales"], list(node.output)),
        ]

    def quantized_group(self, members: list[Any], weights: dict[str, Any]) -> list[Any]:
        """Quantize the shared input once, then one MatMul for all members (split if several)."""
        from onnx import helper

        if not self._shared:
            self.constant("rowwise_last_axis", np.array([-1], np.int64))
            self.constant("rowwise_inverse_127", np.array(1 / 127, np.float32))
            self.constant("rowwise_zero_point", np.array(ZERO_POINT, np.uint8))
            self.constant("rowwise_one", np.array(1.0, np.float32))
            self._shared = True
        prefix = f"rowwise_{self._groups}"
        self._groups += 1
        source = members[0].input[0]
        matrices = [_weight(node, weights) for node in members]
        depth = int(matrices[0].shape[0])
        quantized, scale = quantize_weight(np.concatenate(matrices, axis=1).astype(np.float32))
        row_max, row_scale = f"{prefix}_row_max", f"{prefix}_row_scale"
        nodes = [
            helper.make_node("Abs", [source], [f"{prefix}_abs"]),
            helper.make_node(
                "ReduceMax", [f"{prefix}_abs", "rowwise_last_axis"], [row_max], keepdims=1
            ),
            helper.make_node("Mul", [row_max, "rowwise_inverse_127"], [row_scale]),
            helper.make_node("Shape", [row_scale], [f"{prefix}_scale_shape"]),
            helper.make_node(
                "Expand", ["rowwise_zero_point", f"{prefix}_scale_shape"], [f"{prefix}_zero"]
            ),
            helper.make_node(
                "QuantizeLinear",
                [source, row_scale, f"{prefix}_zero"],
                [f"{prefix}_quantized"],
                axis=-1,
                block_size=depth,
            ),
            helper.make_node(
                "MatMulIntegerToFloat",
                [
                    f"{prefix}_quantized",
                    self.constant(f"{prefix}_weight", quantized),
                    "rowwise_one",
                    self.constant(f"{prefix}_weight_scale", scale),
                    "rowwise_zero_point",
                ],
                [f"{prefix}_column_scaled"],
                domain="com.microsoft",
            ),
        ]
        outputs = [node.output[0] for node in members]
        gemm = members[0].op_type == "Gemm"
        scaled = outputs[0] if len(members) == 1 and not gemm else f"{prefix}_output"
        nodes.append(helper.make_node("Mul", [f"{prefix}_column_scaled", row_scale], [scaled]))
        if gemm:  # Linear's bias, which Gemm added
            nodes.append(helper.make_node("Add", [scaled, members[0].input[2]], outputs))
        if len(members) > 1:
            widths = np.array([m.shape[1] for m in matrices], np.int64)
            split = self.constant(f"{prefix}_widths", widths)
            nodes.append(helper.make_node("Split", [scaled, split], outputs, axis=-1))
        return nodes


def _table_lookup(node: Any, weights: dict[str, Any]) -> bool:
    """A Gather of rows from a large constant float table (an embedding)."""
    from onnx import TensorProto, helper

    if node.op_type != "Gather" or node.input[0] not in weights:
        return False
    table = weights[node.input[0]]
    axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 0)
    return (
        axis == 0
        and len(table.dims) == 2
        and table.data_type == TensorProto.FLOAT
        and table.dims[0] * table.dims[1] >= MIN_TABLE_ELEMENTS
    )


def _constant_matrix(initializer: Any) -> bool:
    return initializer is not None and len(initializer.dims) == 2


def _linear_gemm(node: Any, weights: dict[str, Any]) -> bool:
    """A Gemm that is ``x @ W (.T) + b`` with constant W and b: what torch exports for Linear."""
    from onnx import helper

    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return (
        len(node.input) == 3
        and _constant_matrix(weights.get(node.input[1]))
        and node.input[2] in weights
        and attributes.get("transA", 0) == 0
        and attributes.get("alpha", 1.0) == 1.0
        and attributes.get("beta", 1.0) == 1.0
    )


def _weight(node: Any, weights: dict[str, Any]) -> np.ndarray:
    """The node's weight as (in features, out features)."""
    from onnx import helper, numpy_helper

    matrix = numpy_helper.to_array(weights[node.input[1]])
    transposed = any(a.name == "transB" and helper.get_attribute_value(a) for a in node.attribute)
    return matrix.T if node.op_type == "Gemm" and transposed else matrix


def _check_opset(model: Any) -> None:
    version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if version < 18:
        raise ValueError(
            f"Per-row int8 needs a graph of opset 18 or newer (this one is {version}): "
            "re-export it with opset_version=18."
        )


def _fused(source: Path, target: Path) -> Path:
    """``source`` with GELU (and its bias) fused, nothing else: the rewrite keeps every MatMul."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    for name in vars(options):
        if name.startswith("enable_"):
            setattr(options, name, name in ("enable_gelu", "enable_bias_gelu"))
    with quiet_logger(""):  # shape-inference notes about the exporter's symbolic dims
        optimized = optimize_model(
            str(source), model_type="bert", optimization_options=options, opt_level=0
        )
    optimized.save_model_to_file(str(target))
    return target
