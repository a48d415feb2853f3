"""Quantization: each method writes a graph ONNX Runtime's CPU provider runs, close to fp32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from dlproxy.compression.quantize import (
    Batches,
    convert_fp16,
    matmuls_reading,
    quantize_dynamic_int8,
    quantize_static_int8,
)
from dlproxy.models.builtin import minilm
from dlproxy.models.builtin.corpus import sentences

TEXTS = sentences()[1::35]  # 10 sentences, none of them among the calibration ones below
CALIBRATION = sentences()[::10][:24]
INTERMEDIATE = 1536  # all-MiniLM-L6-v2's FFN width


@pytest.fixture(scope="module")
def fp32(dlproxy_home: Path) -> Path:
    return minilm.export("fp32", quiet=True)


@pytest.fixture(scope="module")
def reference(fp32: Path) -> np.ndarray:
    return run(fp32, TEXTS)


def run(path: Path, texts: list[str]) -> np.ndarray:
    """The graph's sentence embeddings, on the CPU provider only."""
    session = minilm._session(path, 1)
    assert session.get_providers() == ["CPUExecutionProvider"]
    return session.run([minilm.GRAPH_OUTPUT], minilm.tokenize(minilm.load_tokenizer(), texts))[0]


def cosines(got: np.ndarray, expected: np.ndarray) -> np.ndarray:
    return (got * expected).sum(axis=1) / np.linalg.norm(got, axis=1)


def test_dynamic_int8_keeps_quality(fp32: Path, reference: np.ndarray, tmp_path: Path) -> None:
    target = tmp_path / "int8.onnx"
    quantize_dynamic_int8(fp32, target)
    got = run(target, TEXTS)
    assert got.shape == (len(TEXTS), minilm.DIMENSION)
    assert cosines(got, reference).mean() >= 0.99
    assert target.stat().st_size < 0.3 * fp32.stat().st_size  # int8 weights, fp32 embeddings


def test_static_int8_is_calibrated_qdq_leaving_excluded_nodes_in_float(
    fp32: Path, reference: np.ndarray, tmp_path: Path
) -> None:
    tokenizer = minilm.load_tokenizer()
    batches = [minilm.tokenize(tokenizer, CALIBRATION[i : i + 8]) for i in range(0, 24, 8)]
    exclude = matmuls_reading(fp32, INTERMEDIATE)
    assert len(exclude) == 6  # one FFN down-projection per layer
    target = tmp_path / "static.onnx"
    quantize_static_int8(fp32, target, batches, exclude)

    graph = onnx.load(str(target)).graph
    ops = [node.op_type for node in graph.node]
    assert ops.count("QuantizeLinear") > 0 and ops.count("DequantizeLinear") > 0
    quantized_inputs = {
        out for node in graph.node if node.op_type == "DequantizeLinear" for out in node.output
    }
    left_in_float = [node for node in graph.node if node.name in exclude]
    assert len(left_in_float) == 6
    assert not any(name in quantized_inputs for node in left_in_float for name in node.input)
    got = run(target, TEXTS)
    assert got.shape == (len(TEXTS), minilm.DIMENSION)
    assert cosines(got, reference).mean() >= 0.97


def test_static_int8_needs_calibration(fp32: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="calibration"):
        quantize_static_int8(fp32, tmp_path / "x.onnx", [])


def test_fp16_halves_the_weights_keeps_fp32_io_and_runs_on_cpu(
    fp32: Path, reference: np.ndarray, tmp_path: Path
) -> None:
    target = tmp_path / "fp16.onnx"
    convert_fp16(fp32, target)
    model = onnx.load(str(target))
    matrices = [init for init in model.graph.initializer if len(init.dims) == 2]
    floats = {init.data_type for init in matrices} - {onnx.TensorProto.INT64}
    assert floats == {onnx.TensorProto.FLOAT16}  # every weight matrix, no float32 left
    io = [*model.graph.input, *model.graph.output]
    assert {value.type.tensor_type.elem_type for value in model.graph.output} == {
        onnx.TensorProto.FLOAT
    }
    assert all(v.type.tensor_type.elem_type != onnx.TensorProto.FLOAT16 for v in io)
    got = run(target, TEXTS)
    assert got.dtype == np.float32 and got.shape == (len(TEXTS), minilm.DIMENSION)
    assert cosines(got, reference).min() >= 0.999
    assert target.stat().st_size < 0.55 * fp32.stat().st_size


def test_batches_reader_gives_each_batch_once_and_rewinds() -> None:
    first, second = {"x": np.zeros(1)}, {"x": np.ones(1)}
    reader = Batches([first, second])
    assert [reader.get_next(), reader.get_next(), reader.get_next()] == [first, second, None]
    reader.rewind()
    assert reader.get_next() is first
