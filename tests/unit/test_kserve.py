"""The client side of the KServe binary extension (dlproxy.kserve), checked against the server side."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from dlproxy import protocol
from dlproxy.http import codecs
from dlproxy.kserve import decode_infer_response, encode_infer_request, metadata_of, spec_of
from dlproxy.types import InferenceRequest, InferenceResponse, TensorSpec

INPUTS = {
    "text": np.array([b"a", "é".encode(), b"\x00\xff"], dtype=object),
    "x": np.arange(6, dtype=np.float32).reshape(3, 2),
    "ids": np.array([[1], [2], [-3]], dtype=np.int64),
    "mask": np.array([True, False, True]),
}


def test_a_request_is_what_the_server_decodes() -> None:
    body, header_length = encode_infer_request(INPUTS, {"delay_ms": 5})
    request = codecs.decode_kserve(body, "echo", header_length)
    assert request.inputs.keys() == INPUTS.keys()
    for name, array in INPUTS.items():
        assert request.inputs[name].dtype == array.dtype
        np.testing.assert_array_equal(request.inputs[name], array)
    assert request.parameters["delay_ms"] == 5
    assert request.parameters["binary_data_output"] is True


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_a_response_decodes_to_the_outputs(binary: bool) -> None:
    outputs = {k: v for k, v in INPUTS.items() if k != "text" or binary}  # JSON: UTF-8 text only
    response = InferenceResponse("echo", "1", "id", outputs)
    request = InferenceRequest("echo", {}, parameters={"binary_data_output": binary})
    body, header_length = codecs.encode_kserve(response, request)
    wire = decode_infer_response(body, None if header_length is None else str(header_length), 3)
    for name, array in outputs.items():
        decoded = protocol.from_wire(wire[name])
        assert decoded.shape == array.shape
        np.testing.assert_array_equal(decoded, array)


@pytest.mark.parametrize(
    "output",
    [
        {"name": "y", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3, 4]},  # 2 rows, not 3
        {"name": "y", "datatype": "FP32", "shape": [3], "data": [1, 2]},  # too few values
        {"name": "y", "datatype": "FP99", "shape": [3], "data": [1, 2, 3]},
        {"name": "y", "datatype": "FP32", "shape": [3], "parameters": {"binary_data_size": 12}},
    ],
)
def test_an_answer_that_does_not_add_up_is_refused(output: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        decode_infer_response(orjson.dumps({"outputs": [output]}), None, 3)


def test_triton_style_metadata_makes_a_spec() -> None:
    metadata = {
        "name": "resnet",
        "versions": ["1", "2"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3, 224, 224]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 1000]}],
    }
    spec = spec_of("resnet", metadata)
    assert spec.version == "2" and spec.max_batch_size == 0
    assert spec.inputs == (TensorSpec("x", "FP32", (-1, 3, 224, 224)),)
    assert spec.outputs == (TensorSpec("y", "FP32", (-1, 1000)),)


def test_metadata_written_by_the_server_reads_back_as_the_same_spec() -> None:
    spec = spec_of("resnet", {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]})
    assert spec_of("resnet", metadata_of(spec)) == spec
