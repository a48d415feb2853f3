"""OnnxFileModel: a user's ONNX graph is described from its inputs/outputs and run as declared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from dlproxy.models.onnx import OnnxFileModel
from dlproxy.models.registry import create_model


def double_graph(path: Path, batch: str | int = "batch") -> Path:
    """y = x * 2 on FP32 [batch, 4], plus n = argmax(x) as INT64 [batch]."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4])
    n = helper.make_tensor_value_info("n", TensorProto.INT64, [batch])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    nodes = [
        helper.make_node("Mul", ["x", "two"], ["y"]),
        helper.make_node("ArgMax", ["x"], ["n"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(nodes, "double", [x], [y, n], initializer=[two])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_spec_from_graph(tmp_path: Path) -> None:
    model = OnnxFileModel(double_graph(tmp_path / "double.onnx"), threads=1)
    model.load()
    spec = model.spec
    assert (spec.name, spec.version, spec.platform) == ("double", "1", "onnxruntime")
    assert [(t.name, t.datatype, t.shape) for t in spec.inputs] == [("x", "FP32", (-1, 4))]
    assert [(t.name, t.datatype, t.shape) for t in spec.outputs] == [
        ("y", "FP32", (-1, 4)),
        ("n", "INT64", (-1,)),
    ]
    assert spec.max_batch_size >= 2


def test_predict_casts_to_declared_type(tmp_path: Path) -> None:
    model = create_model(str(double_graph(tmp_path / "double.onnx")), threads=1)
    assert isinstance(model, OnnxFileModel)
    model.load()
    x = np.array([[1, 5, 3, 2], [0.5, -1, 0, 9]], dtype=np.float64)  # JSON clients send FP64
    out = model.predict({"x": x}, {})
    assert out["y"].dtype == np.float32
    np.testing.assert_allclose(out["y"], x * 2)
    np.testing.assert_array_equal(out["n"], [1, 3])


def test_fixed_batch_dim_is_still_the_item_axis(tmp_path: Path) -> None:
    model = OnnxFileModel(double_graph(tmp_path / "one.onnx", batch=1), threads=1)
    model.load()
    assert model.spec.inputs[0].shape == (-1, 4)
    assert model.spec.max_batch_size == 1


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        OnnxFileModel(tmp_path / "absent.onnx").load()
