"""Per-row int8 on small graphs built here: close to float, and no row depends on another."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from dlproxy.models.rowwise import quantize_rowwise, quantize_weight

RNG = np.random.default_rng(0)


def graph_file(path: Path, opset: int = 18) -> Path:
    """ids -> embedding lookup -> two MatMuls sharing their input (concatenated) -> Linear Gemm."""
    table = RNG.standard_normal((512, 128)).astype(np.float32)
    left, right = (RNG.standard_normal((128, 64)).astype(np.float32) for _ in range(2))
    linear, bias = RNG.standard_normal((32, 64)).astype(np.float32), np.ones(32, np.float32)
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["embedded"], axis=0),
        helper.make_node("MatMul", ["embedded", "left"], ["a"], name="left_matmul"),
        helper.make_node("MatMul", ["embedded", "right"], ["b"], name="right_matmul"),
        helper.make_node("Add", ["a", "b"], ["summed"]),
        helper.make_node("Gemm", ["summed", "linear", "bias"], ["out"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "small",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["n"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 32])],
        [
            numpy_helper.from_array(array, name)
            for name, array in {
                "table": table,
                "left": left,
                "right": right,
                "linear": linear,
                "bias": bias,
            }.items()
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.save(model, str(path))
    return path


def run(path: Path, ids: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["out"], {"ids": ids})[0])


def test_quantized_graph_is_close_to_float_and_rows_are_independent(tmp_path: Path) -> None:
    source = graph_file(tmp_path / "float.onnx")
    target = tmp_path / "int8.onnx"
    assert quantize_rowwise(source, target) == 3  # two grouped MatMuls and the Gemm
    ids = RNG.integers(0, 512, size=64)
    expected, got = run(source, ids), run(target, ids)
    relative = np.abs(got - expected).max() / np.abs(expected).max()
    assert relative < 0.03
    alone = np.concatenate([run(target, ids[i : i + 1]) for i in range(len(ids))])
    assert np.abs(alone - got).max() <= 1e-5
    ops = [node.op_type for node in onnx.load(str(target)).graph.node]
    assert ops.count("MatMulIntegerToFloat") == 2  # the shared-input pair ran as one
    assert "MatMul" not in ops and "Gemm" not in ops
    assert target.stat().st_size < source.stat().st_size / 3  # int8 table and weights


def test_weights_are_symmetric_7_bit_per_column() -> None:
    weight = np.array([[1.0, -4.0], [-0.5, 2.0]], np.float32)
    quantized, scale = quantize_weight(weight)
    assert quantized.dtype == np.int8
    assert np.allclose(scale, [1 / 63, 4 / 63])
    assert quantized.tolist() == [[63, -63], [-31, 31]]


def test_old_opsets_and_graphs_without_matmuls_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="opset 18 or newer"):
        quantize_rowwise(graph_file(tmp_path / "old.onnx", opset=17), tmp_path / "out.onnx")
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])],
    )
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    with pytest.raises(ValueError, match="no MatMul"):
        quantize_rowwise(path, tmp_path / "out.onnx")
