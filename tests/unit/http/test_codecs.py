"""The codecs against the real clients: bodies built by tritonclient and read back by it, and
OpenAI bodies checked with the openai package's own types and its base64 decoding."""

from __future__ import annotations

import base64
import struct
from typing import Any

import httpx2
import numpy as np
import openai
import orjson
import pytest
import tritonclient.http as triton
from openai.types import CreateEmbeddingResponse

from dlproxy.errors import BadRequest
from dlproxy.http import codecs
from dlproxy.types import InferenceRequest, InferenceResponse, datatype_of


def triton_body(
    arrays: dict[str, np.ndarray],
    binary: bool,
    outputs: dict[str, bool] | None = None,
) -> tuple[bytes, int | None]:
    """A request body exactly as tritonclient sends it."""
    inputs = []
    for name, array in arrays.items():
        tensor = triton.InferInput(name, list(array.shape), datatype_of(array))
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    requested = None
    if outputs is not None:
        requested = [triton.InferRequestedOutput(n, binary_data=b) for n, b in outputs.items()]
    body, json_size = triton.InferenceServerClient.generate_request_body(inputs, outputs=requested)
    return body, json_size


def decode_dict(payload: dict[str, Any]) -> InferenceRequest:
    return codecs.decode_kserve(orjson.dumps(payload), "m", None)


def texts(*values: bytes) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = list(values)
    return array


def answer(request: InferenceRequest, outputs: dict[str, np.ndarray]) -> InferenceResponse:
    return InferenceResponse(model="m", model_version="1", id="r1", outputs=outputs)


# --- KServe decode ---------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [False, True])
def test_decodes_tritonclient_bodies(binary: bool) -> None:
    arrays = {
        "image": np.arange(6, dtype=np.float32).reshape(2, 3) / 7,
        "ids": np.array([[1, -2], [3, 2**40]], dtype=np.int64),
        "mask": np.array([True, False]),
        "text": texts("héllo".encode(), b"world"),
    }
    body, json_size = triton_body(arrays, binary)
    assert (json_size is not None) == binary
    request = codecs.decode_kserve(body, "m", json_size)
    assert request.model == "m"
    assert request.items == 2
    assert list(request.inputs) == list(arrays)
    for name, array in arrays.items():
        got = request.inputs[name]
        assert got.dtype == array.dtype
        assert got.shape == array.shape
        assert got.tolist() == array.tolist()
    assert request.outputs is None
    # tritonclient asks for binary outputs when it names none
    assert request.parameters["binary_data_output"] is True


def test_binary_numeric_input_is_a_view_of_the_body() -> None:
    body, json_size = triton_body({"x": np.ones((4, 8), dtype=np.float32)}, binary=True)
    array = codecs.decode_kserve(body, "m", json_size).inputs["x"]
    assert not array.flags.writeable
    assert array.base is not None


def test_nested_and_flat_json_data_agree() -> None:
    flat = decode_dict(
        {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4.5]}]}
    )
    nested = decode_dict(
        {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4.5]]}]}
    )
    assert flat.inputs["x"].tolist() == nested.inputs["x"].tolist() == [[1, 2], [3, 4.5]]
    assert nested.inputs["x"].dtype == np.float32


def test_keeps_id_and_request_parameters() -> None:
    request = decode_dict(
        {
            "id": "abc",
            "parameters": {"priority": 3},
            "inputs": [{"name": "x", "shape": [1], "datatype": "INT8", "data": [-128]}],
        }
    )
    assert request.id == "abc"
    assert request.parameters["priority"] == 3
    assert request.parameters["binary_data_output"] is False
    assert request.protocol == "kserve"


def test_requested_outputs_and_their_binary_choice() -> None:
    body, size = triton_body(
        {"x": np.ones((1, 2), np.float32)}, binary=False, outputs={"a": False, "b": True}
    )
    request = codecs.decode_kserve(body, "m", size)
    assert request.outputs == ["a", "b"]
    assert request.parameters["binary_outputs"] == {"a": False, "b": True}


def test_binary_data_output_is_the_default_for_outputs_that_do_not_say() -> None:
    request = decode_dict(
        {
            "parameters": {"binary_data_output": True},
            "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],
            "outputs": [{"name": "a"}, {"name": "b", "parameters": {"binary_data": False}}],
        }
    )
    assert request.parameters["binary_outputs"] == {"a": True, "b": False}


def binary_body(header: dict[str, Any], data: bytes) -> tuple[bytes, int]:
    encoded = orjson.dumps(header)
    return encoded + data, len(encoded)


def binary_input(name: str, datatype: str, shape: list[int], size: int) -> dict[str, Any]:
    return {
        "name": name,
        "datatype": datatype,
        "shape": shape,
        "parameters": {"binary_data_size": size},
    }


def tensor(name: str = "x", **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": name, "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]}
    base.update(fields)
    return base


JSON_ERRORS: list[tuple[dict[str, Any], str]] = [
    ({"inputs": []}, "no inputs"),
    ({}, "missing required field `inputs`"),
    ({"inputs": [tensor(data=[1.0, "a"])]}, "input 'x' (FP32)"),
    ({"inputs": [tensor(data=[True, 1.0])]}, "got `bool`"),
    ({"inputs": [tensor(datatype="INT32", data=[1, 2.5])]}, "Expected `int`, got `float`"),
    ({"inputs": [tensor(datatype="BOOL", data=[1, 0])]}, "Expected `bool`, got `int`"),
    ({"inputs": [tensor(datatype="BYTES", data=["a", 1])]}, "Expected `str`, got `int`"),
    ({"inputs": [tensor(datatype="INT8", data=[1, 300])]}, "out of range for INT8"),
    ({"inputs": [tensor(datatype="UINT64", data=[1, -1])]}, "out of range for UINT64"),
    ({"inputs": [tensor(datatype="INT64", data=[1, 2**63])]}, "out of range for INT64"),
    ({"inputs": [tensor(datatype="FP16", data=[1, 1e10])]}, "out of range for FP16"),
    ({"inputs": [tensor(datatype="FP32", data=[1, 1e300])]}, "out of range for FP32"),
    ({"inputs": [tensor(datatype="BF16")]}, "unknown datatype 'BF16'"),
    ({"inputs": [tensor(shape=[], data=[1.0])]}, "shape []"),
    ({"inputs": [tensor(shape=[0, 3], data=[])]}, "0 items"),
    ({"inputs": [tensor(shape=[-2], data=[1.0])]}, "negative dimension"),
    ({"inputs": [tensor(shape=[2**40, 2**40], data=[1.0])]}, "too large"),
    ({"inputs": [tensor(shape=[1] * 33, data=[1.0])]}, "at most 32"),
    ({"inputs": [tensor(shape=[3])]}, "(3 elements) but its data has 2"),
    ({"inputs": [tensor(data=[[[1.0]], [[2.0]]])]}, "nested 3 deep"),
    ({"inputs": [tensor(data=5)]}, "must be a JSON array"),
    ({"inputs": [tensor(data=None)]}, "must be a JSON array"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}, "neither 'data'"),
    ({"inputs": [tensor(), tensor()]}, "input 'x' appears more than once"),
    (
        {"inputs": [tensor("a"), tensor("b", shape=[3], data=[1, 2, 3])]},
        "input 'b' has 3 items (shape [3]) but input 'a' has 2",
    ),
    ({"inputs": [tensor(parameters={"binary_data_size": 8})]}, "both 'data' and"),
    (
        {"inputs": [binary_input("x", "FP32", [2], 8)]},
        "no Inference-Header-Content-Length",
    ),
    ({"inputs": [tensor(parameters={"shared_memory_region": "r"})]}, "not supported"),
    ({"inputs": [tensor()], "outputs": [{"name": "y"}, {"name": "y"}]}, "more than once"),
    (
        {"inputs": [tensor()], "outputs": [{"name": "y", "parameters": {"classification": 2}}]},
        "'classification' is not supported",
    ),
    (
        {"inputs": [tensor()], "outputs": [{"name": "y", "parameters": {"binary_data": 1}}]},
        "binary_data must be true or false",
    ),
    ({"inputs": [tensor()], "parameters": {"binary_data_output": "yes"}}, "true or false"),
    ({"inputs": [tensor(name=3)]}, "Expected `str`, got `int` - at `$.inputs[0].name`"),
]


@pytest.mark.parametrize(("payload", "message"), JSON_ERRORS)
def test_json_errors_say_what_is_wrong(payload: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequest) as info:
        decode_dict(payload)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"[1, 2]",
        b"null",
        b'{"inputs": [{"name": "\xff"}]}',
        b"\xff\xfe",
        b'{"inputs": [], "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ],
)
def test_malformed_json_is_a_bad_request(body: bytes) -> None:
    with pytest.raises(BadRequest, match="invalid inference request"):
        codecs.decode_kserve(body, "m", None)


BINARY_ERRORS: list[tuple[dict[str, Any], bytes, str]] = [
    (
        {"inputs": [binary_input("x", "FP32", [2], 8)]},
        b"\x00" * 7,
        "input 'x' declares binary_data_size 8 but only 7 bytes",
    ),
    (
        {"inputs": [binary_input("x", "FP32", [2], 8)]},
        b"\x00" * 9,
        "1 bytes after the JSON header",
    ),
    (
        {"inputs": [binary_input("x", "FP32", [2], 4)]},
        b"\x00" * 4,
        "input 'x' (FP32, shape [2]) needs 8 bytes of binary data, got binary_data_size 4",
    ),
    (
        {"inputs": [binary_input("x", "BOOL", [2], 2)]},
        b"\x01\x02",
        "byte other than 0 or 1",
    ),
    (
        {"inputs": [binary_input("t", "BYTES", [2], 5)]},
        struct.pack("<I", 1) + b"a",
        "has shape [2] (2 elements) but its binary data holds 1",
    ),
    (
        {"inputs": [binary_input("t", "BYTES", [1], 10)]},
        struct.pack("<I", 1) + b"a" + struct.pack("<I", 1) + b"b",
        "more than the 1 elements",
    ),
    (
        {"inputs": [binary_input("t", "BYTES", [1], 6)]},
        struct.pack("<I", 5) + b"ab",
        "element 0 declares 5 bytes but only 2 remain",
    ),
    (
        {"inputs": [binary_input("t", "BYTES", [2], 7)]},
        struct.pack("<I", 1) + b"a" + b"\x00\x00",
        "ends inside the length of element 1",
    ),
    (
        {"inputs": [binary_input("x", "FP32", [1], -4)]},
        b"",
        "non-negative integer",
    ),
    (
        {"inputs": [binary_input("x", "FP32", [1], True)]},
        b"",
        "non-negative integer",
    ),
]


@pytest.mark.parametrize(("header", "data", "message"), BINARY_ERRORS)
def test_binary_errors_say_which_input_and_sizes(
    header: dict[str, Any], data: bytes, message: str
) -> None:
    body, length = binary_body(header, data)
    with pytest.raises(BadRequest) as info:
        codecs.decode_kserve(body, "m", length)
    assert message in str(info.value)


@pytest.mark.parametrize("header_length", [-1, 10_000])
def test_header_length_outside_the_body(header_length: int) -> None:
    with pytest.raises(BadRequest, match="Inference-Header-Content-Length"):
        codecs.decode_kserve(b"{}", "m", header_length)


def test_truncated_tritonclient_body() -> None:
    body, json_size = triton_body({"x": np.ones((2, 3), np.float32)}, binary=True)
    with pytest.raises(BadRequest, match="input 'x' declares binary_data_size 24"):
        codecs.decode_kserve(body[:-1], "m", json_size)


def test_binary_inputs_take_their_bytes_in_order() -> None:
    first = np.array([1, 2], np.int16)
    second = np.array([[1.5], [2.5]], np.float64)
    body, json_size = triton_body({"a": first, "b": second}, binary=True)
    request = codecs.decode_kserve(body, "m", json_size)
    assert request.inputs["a"].tolist() == [1, 2]
    assert request.inputs["b"].tolist() == [[1.5], [2.5]]


# --- KServe encode ---------------------------------------------------------------------------


def read_back(body: bytes, header_length: int | None) -> triton.InferResult:
    return triton.InferResult.from_response_body(body, header_length=header_length)


OUTPUTS = {
    "embedding": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4),
    "label": np.array([7, 0, 2**62], np.int64),
    "ok": np.array([True, False, True]),
    "echo": texts(b"a", "é".encode(), b""),
}


@pytest.mark.parametrize("binary", [False, True])
def test_encode_all_outputs_reads_back_with_tritonclient(binary: bool) -> None:
    request = InferenceRequest(model="m", inputs={}, parameters={"binary_data_output": binary})
    body, header_length = codecs.encode_kserve(answer(request, OUTPUTS), request)
    assert (header_length is not None) == binary
    result = read_back(body, header_length)
    response = result.get_response()
    assert response["model_name"] == "m"
    assert response["model_version"] == "1"
    assert response["id"] == "r1"
    for name, array in OUTPUTS.items():
        got = result.as_numpy(name)
        assert got.shape == array.shape
        if array.dtype == object:
            expected = [x if binary else x.decode() for x in array.tolist()]
            assert got.tolist() == expected
        else:
            assert got.dtype == array.dtype
            np.testing.assert_array_equal(got, array)


def test_encode_filters_and_mixes_json_and_binary() -> None:
    body, size = triton_body(
        {"x": np.ones((3, 1), np.float32)},
        binary=False,
        outputs={"label": False, "embedding": True},
    )
    request = codecs.decode_kserve(body, "m", size)
    body, header_length = codecs.encode_kserve(answer(request, OUTPUTS), request)
    assert header_length is not None
    result = read_back(body, header_length)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["label", "embedding"]
    assert "data" in result.get_output("label")
    assert result.get_output("embedding")["parameters"]["binary_data_size"] == 48
    np.testing.assert_array_equal(result.as_numpy("embedding"), OUTPUTS["embedding"])
    np.testing.assert_array_equal(result.as_numpy("label"), OUTPUTS["label"])
    assert result.as_numpy("ok") is None


def test_json_outputs_are_flat_row_major() -> None:
    request = InferenceRequest(model="m", inputs={}, outputs=["embedding"])
    body, header_length = codecs.encode_kserve(answer(request, OUTPUTS), request)
    assert header_length is None
    output = orjson.loads(body)["outputs"][0]
    assert output["shape"] == [3, 4]
    np.testing.assert_array_equal(
        np.array(output["data"], np.float32), OUTPUTS["embedding"].ravel()
    )


def test_non_contiguous_and_unaligned_outputs() -> None:
    transposed = np.arange(6, dtype=np.float32).reshape(2, 3).T
    unaligned = np.frombuffer(b"x" + np.arange(3, dtype=np.float64).tobytes(), np.float64, 3, 1)
    assert not unaligned.flags.aligned
    for binary in (False, True):
        request = InferenceRequest(model="m", inputs={}, parameters={"binary_data_output": binary})
        response = answer(request, {"t": transposed, "u": unaligned})
        result = read_back(*codecs.encode_kserve(response, request))
        np.testing.assert_array_equal(result.as_numpy("t"), transposed)
        np.testing.assert_array_equal(result.as_numpy("u"), unaligned)


def test_non_utf8_bytes_output_needs_binary() -> None:
    request = InferenceRequest(model="m", inputs={})
    with pytest.raises(BadRequest, match="output 'raw' item 1 is not UTF-8"):
        codecs.encode_kserve(answer(request, {"raw": texts(b"ok", b"\xff")}), request)
    request.parameters["binary_data_output"] = True
    body, header_length = codecs.encode_kserve(
        answer(request, {"raw": texts(b"ok", b"\xff")}), request
    )
    assert read_back(body, header_length).as_numpy("raw").tolist() == [b"ok", b"\xff"]


def test_requested_output_the_model_lacks() -> None:
    request = InferenceRequest(model="m", inputs={}, outputs=["nope"])
    with pytest.raises(BadRequest, match="has no output 'nope'"):
        codecs.encode_kserve(answer(request, OUTPUTS), request)


def test_kserve_error_body() -> None:
    assert orjson.loads(codecs.encode_kserve_error('bad "x"')) == {"error": 'bad "x"'}


# --- decode_texts ----------------------------------------------------------------------------


def test_decode_texts() -> None:
    assert codecs.decode_texts(texts(b"a", "é".encode())) == ["a", "é"]
    with pytest.raises(BadRequest) as info:
        codecs.decode_texts(texts(b"a", b"b", b"c", b"\xff"))
    assert str(info.value) == "input 'text' item 3 is not valid UTF-8"
    with pytest.raises(BadRequest, match="must be BYTES"):
        codecs.decode_texts(np.ones(2, np.float32))
    with pytest.raises(BadRequest, match="item 0 is not text"):
        codecs.decode_texts(np.array([None, b"x"], dtype=object))


# --- OpenAI embeddings -----------------------------------------------------------------------


def test_decode_openai_string_and_list() -> None:
    single = codecs.decode_openai_embeddings(b'{"model": "minilm", "input": "hello"}')
    assert single.model == "minilm"
    assert single.protocol == "openai"
    assert single.inputs["text"].tolist() == [b"hello"]
    assert single.parameters["encoding_format"] == "float"
    many = codecs.decode_openai_embeddings(
        orjson.dumps(
            {
                "model": "nobody-serves-this",
                "input": ["a", "é"],
                "encoding_format": "base64",
                "dimensions": 384,
                "user": "u1",
                "extra": 1,
            }
        )
    )
    assert many.inputs["text"].dtype == object
    assert many.inputs["text"].tolist() == [b"a", "é".encode()]
    assert many.items == 2
    assert many.parameters == {"encoding_format": "base64", "dimensions": 384, "user": "u1"}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"model": "m", "input": [1, 2, 3]}, "token arrays are not supported; send text"),
        ({"model": "m", "input": [[1, 2], [3]]}, "token arrays are not supported; send text"),
        ({"model": "m", "input": []}, "empty list"),
        ({"model": "m", "input": ""}, "item 0 is an empty string"),
        ({"model": "m", "input": ["a", ""]}, "item 1 is an empty string"),
        ({"model": "m", "input": ["a", None]}, "item 1 must be a string, got NoneType"),
        ({"model": "m", "input": "a", "encoding_format": "int8"}, "encoding_format"),
        ({"model": "m", "input": "a", "dimensions": 0}, "dimensions"),
        ({"input": "a"}, "missing required field `model`"),
        ({"model": "m"}, "missing required field `input`"),
        ({"model": 5, "input": "a"}, "$.model"),
    ],
)
def test_openai_errors(payload: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequest) as info:
        codecs.decode_openai_embeddings(orjson.dumps(payload))
    assert message in str(info.value)


def embeddings_response(request: InferenceRequest, width: int = 4) -> InferenceResponse:
    count = request.items
    rng = np.random.default_rng(count)
    vectors = rng.standard_normal((count, width)).astype(np.float32)
    return InferenceResponse(
        model="minilm", model_version="1", id="", outputs={"embedding": vectors}
    )


@pytest.mark.parametrize("encoding_format", ["float", "base64"])
def test_encode_openai_embeddings(encoding_format: str) -> None:
    request = codecs.decode_openai_embeddings(
        orjson.dumps(
            {"model": "minilm", "input": ["a", "b", "c"], "encoding_format": encoding_format}
        )
    )
    response = embeddings_response(request)
    body = codecs.encode_openai_embeddings(response, request, prompt_tokens=9)
    expected = response.outputs["embedding"]
    if encoding_format == "float":
        parsed = CreateEmbeddingResponse.model_validate_json(body)
        got = np.array([item.embedding for item in parsed.data], dtype=np.float32)
    else:
        raw = orjson.loads(body)
        got = np.array(
            [np.frombuffer(base64.b64decode(item["embedding"]), "float32") for item in raw["data"]]
        )
        parsed = CreateEmbeddingResponse.model_construct(**raw)
    np.testing.assert_array_equal(got, expected)
    assert [item["index"] for item in orjson.loads(body)["data"]] == [0, 1, 2]
    assert orjson.loads(body)["usage"] == {"prompt_tokens": 9, "total_tokens": 9}
    assert parsed.model == "minilm"
    assert parsed.object == "list"


@pytest.mark.parametrize("encoding_format", [None, "float", "base64"])
def test_openai_client_round_trip(encoding_format: str | None) -> None:
    """The openai client (base64 by default) against the codecs, through a mock transport."""
    seen: list[InferenceRequest] = []

    def handle(http_request: httpx2.Request) -> httpx2.Response:
        try:
            request = codecs.decode_openai_embeddings(http_request.content)
        except BadRequest as exc:
            body = codecs.encode_openai_error(str(exc), "invalid_request_error", 400)
            return httpx2.Response(400, content=body, headers={"content-type": "application/json"})
        seen.append(request)
        body = codecs.encode_openai_embeddings(embeddings_response(request, 8), request, 5)
        return httpx2.Response(200, content=body, headers={"content-type": "application/json"})

    client = openai.OpenAI(
        api_key="x",
        base_url="http://dlproxy.test/v1",
        http_client=httpx2.Client(transport=httpx2.MockTransport(handle)),
        max_retries=0,
    )
    extra: dict[str, Any] = {} if encoding_format is None else {"encoding_format": encoding_format}
    result = client.embeddings.create(model="minilm", input=["one", "two"], **extra)
    expected = embeddings_response(seen[0], 8).outputs["embedding"]
    if encoding_format == "base64":  # asked for explicitly, the client leaves it encoded
        rows = [
            np.frombuffer(base64.b64decode(str(item.embedding)), "float32") for item in result.data
        ]
    else:
        rows = [np.array(item.embedding, np.float32) for item in result.data]
    np.testing.assert_array_equal(np.array(rows), expected)
    assert result.usage.prompt_tokens == 5
    assert seen[0].parameters["encoding_format"] == (encoding_format or "base64")

    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="minilm", input=[1, 2, 3])
    assert "token arrays are not supported" in str(info.value)


def test_dimensions_must_match_the_model() -> None:
    request = codecs.decode_openai_embeddings(b'{"model": "m", "input": "a", "dimensions": 3}')
    with pytest.raises(BadRequest, match="'dimensions' is 3 but model 'minilm' gives 4"):
        codecs.encode_openai_embeddings(embeddings_response(request), request)


def test_openai_deeply_nested_json() -> None:
    body = b'{"model": "m", "input": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(BadRequest, match="nested too deeply"):
        codecs.decode_openai_embeddings(body)


def test_openai_error_body_has_openais_shape() -> None:
    body = codecs.encode_openai_error("no such model", "not_found_error", "model_not_found", "model")
    assert orjson.loads(body) == {
        "error": {
            "message": "no such model",
            "type": "not_found_error",
            "param": "model",
            "code": "model_not_found",
        }
    }
