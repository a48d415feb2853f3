"""Properties of the codecs: decoders raise nothing but BadRequest on any input, and every tensor
tritonclient can send comes back unchanged through decode, encode and tritonclient again."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import orjson
import tritonclient.http as triton
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dlproxy.errors import BadRequest
from dlproxy.http import codecs
from dlproxy.types import DTYPES, InferenceRequest, InferenceResponse, datatype_of

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=4)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=16,
)
numbers = st.integers(min_value=-(2**65), max_value=2**65) | st.floats(
    allow_nan=False, allow_infinity=False
)
VALID_ELEMENTS: dict[type, st.SearchStrategy[Any]] = {
    bool: st.booleans(),
    int: st.integers(min_value=-(2**64), max_value=2**64),
    float: st.floats(allow_nan=False, allow_infinity=False),
    str: st.text(max_size=3),
}


@st.composite
def inputs(draw: st.DrawFn) -> dict[str, Any]:
    """A near-valid input, so fuzzing reaches the tensor code and not only the schema check."""
    datatype = draw(st.sampled_from([*DTYPES, "BF16"]))
    shape = draw(
        st.lists(st.integers(min_value=-1, max_value=3), min_size=0, max_size=3)
        | st.builds(lambda rest: [1, *rest], st.lists(st.integers(0, 3), max_size=2))
    )
    count = max(0, int(np.prod(shape))) + draw(st.sampled_from([0, 0, 0, -1, 1]))
    kind = codecs._ELEMENT.get(datatype, float)
    element = VALID_ELEMENTS[kind] | (scalars if draw(st.booleans()) else st.nothing())
    values = draw(st.lists(element, min_size=max(count, 0), max_size=max(count, 0)))
    if len(shape) > 1 and shape[-1] > 0 and len(values) % shape[-1] == 0 and draw(st.booleans()):
        width = shape[-1]
        values = [values[i : i + width] for i in range(0, len(values), width)]
    tensor: dict[str, Any] = {
        "name": draw(st.sampled_from(["a", "b"])),
        "shape": shape,
        "datatype": datatype,
    }
    if draw(st.integers(0, 5)):
        tensor["data"] = values
    else:
        tensor["parameters"] = {"binary_data_size": draw(st.integers(min_value=-1, max_value=40))}
    return tensor


outputs = st.fixed_dictionaries(
    {"name": st.sampled_from(["a", "b", "c"])},
    optional={"parameters": st.fixed_dictionaries({}, optional={"binary_data": scalars})},
)
kserve_requests = st.fixed_dictionaries(
    {"inputs": st.lists(inputs(), max_size=3)},
    optional={
        "id": st.text(max_size=3),
        "parameters": st.fixed_dictionaries({}, optional={"binary_data_output": scalars}),
        "outputs": st.lists(outputs, max_size=3),
    },
)
openai_requests = st.fixed_dictionaries(
    {},
    optional={
        "model": st.text(max_size=4) | json_values,
        "input": st.text(max_size=4)
        | st.lists(st.text(max_size=3) | st.integers(), max_size=4)
        | json_values,
        "encoding_format": st.sampled_from(["float", "base64", "int8"]) | json_values,
        "dimensions": st.integers(min_value=-1, max_value=500) | json_values,
        "user": json_values,
    },
)


def dump(payload: Any) -> bytes:
    """JSON as a client might send it (the standard library, so integers of any size pass)."""
    return json.dumps(payload).encode()


def only_bad_request(decode: Any, *args: Any) -> None:
    """Call a decoder; BadRequest is an allowed answer, anything else fails the test."""
    try:
        decode(*args)
    except BadRequest as exc:
        assert str(exc)


# --- Fuzzing: any input, only BadRequest -----------------------------------------------------


@FUZZ
@given(body=st.binary(max_size=200), header=st.none() | st.integers(min_value=-4, max_value=220))
def test_kserve_arbitrary_bytes(body: bytes, header: int | None) -> None:
    only_bad_request(codecs.decode_kserve, body, "m", header)


@FUZZ
@given(body=st.binary(max_size=200))
def test_openai_arbitrary_bytes(body: bytes) -> None:
    only_bad_request(codecs.decode_openai_embeddings, body)


@FUZZ
@given(payload=kserve_requests | json_values)
def test_kserve_arbitrary_json(payload: Any) -> None:
    only_bad_request(codecs.decode_kserve, dump(payload), "m", None)


@FUZZ
@given(payload=kserve_requests, binary=st.binary(max_size=64), extra=st.integers(-2, 2))
def test_kserve_arbitrary_binary_sections(payload: Any, binary: bytes, extra: int) -> None:
    header = dump(payload)
    only_bad_request(codecs.decode_kserve, header + binary, "m", len(header) + extra)


@FUZZ
@given(
    values=st.lists(st.binary(max_size=6), min_size=1, max_size=4),
    cut=st.integers(min_value=0, max_value=40),
    flip=st.integers(min_value=0, max_value=200),
    extra=st.integers(-3, 3),
)
def test_kserve_mutated_tritonclient_bodies(
    values: list[bytes], cut: int, flip: int, extra: int
) -> None:
    """Real binary bodies, cut short, with a byte changed, or with a wrong header length."""
    text = np.empty(len(values), dtype=object)
    text[:] = values
    numbers = np.arange(len(values) * 2, dtype=np.float32).reshape(len(values), 2)
    tensors_in = []
    for name, array in (("text", text), ("x", numbers)):
        tensor = triton.InferInput(name, list(array.shape), datatype_of(array))
        tensor.set_data_from_numpy(array, binary_data=True)
        tensors_in.append(tensor)
    body, json_size = triton.InferenceServerClient.generate_request_body(tensors_in)
    mutated = bytearray(body[: max(0, len(body) - cut)])
    if mutated:
        mutated[flip % len(mutated)] ^= 0xFF
    only_bad_request(codecs.decode_kserve, bytes(mutated), "m", json_size + extra)
    only_bad_request(codecs.decode_kserve, body[: len(body) - cut], "m", json_size)


@FUZZ
@given(payload=openai_requests | json_values)
def test_openai_arbitrary_json(payload: Any) -> None:
    only_bad_request(codecs.decode_openai_embeddings, dump(payload))


@FUZZ
@given(items=st.lists(st.binary(max_size=6) | st.text(max_size=3) | st.none(), max_size=5))
def test_decode_texts_arbitrary_items(items: list[Any]) -> None:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    only_bad_request(codecs.decode_texts, array)


# --- Round trips through tritonclient --------------------------------------------------------

shapes = st.builds(
    lambda first, rest: (first, *rest),
    st.integers(min_value=1, max_value=3),
    st.lists(st.integers(min_value=0, max_value=3), max_size=3),
)
NUMERIC = [name for name in DTYPES if name != "BYTES"]


@st.composite
def tensors(draw: st.DrawFn, as_json: bool) -> np.ndarray:
    """A tensor of any datatype; finite floats only (JSON has no others, and binary tensors
    refuse them too: a NaN would be computed and cached as null)."""
    datatype = draw(st.sampled_from(list(DTYPES)))
    shape = draw(shapes)
    if datatype == "BYTES":
        element = st.text(max_size=5).map(str.encode) if as_json else st.binary(max_size=5)
        values = draw(st.lists(element, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array.reshape(shape)
    elements = None
    if DTYPES[datatype].kind == "f":
        elements = st.floats(
            allow_nan=False, allow_infinity=False, width=DTYPES[datatype].itemsize * 8
        )
    return draw(hnp.arrays(DTYPES[datatype], shape, elements=elements))


def assert_same(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.shape == expected.shape
    if expected.dtype == object:
        assert [x if isinstance(x, bytes) else x.encode() for x in got.ravel().tolist()] == list(
            expected.ravel().tolist()
        )
    else:
        assert got.dtype == expected.dtype
        assert got.tobytes() == expected.tobytes() or np.array_equal(got, expected, equal_nan=True)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), binary_in=st.booleans(), binary_out=st.booleans())
def test_round_trip_through_tritonclient(
    data: st.DataObject, binary_in: bool, binary_out: bool
) -> None:
    count = data.draw(st.integers(min_value=1, max_value=3))
    as_json = not (binary_in and binary_out)  # JSON carries neither NaN nor non-UTF-8 bytes
    first = data.draw(tensors(as_json))
    arrays = {"t0": first}
    for index in range(1, count):
        array = data.draw(tensors(as_json))
        if array.shape[0] == first.shape[0]:
            arrays[f"t{index}"] = array
    tensors_in = []
    for name, array in arrays.items():
        tensor = triton.InferInput(name, list(array.shape), datatype_of(array))
        tensor.set_data_from_numpy(array, binary_data=binary_in)
        tensors_in.append(tensor)
    requested = [triton.InferRequestedOutput(name, binary_data=binary_out) for name in arrays]
    body, json_size = triton.InferenceServerClient.generate_request_body(
        tensors_in, outputs=requested
    )

    request = codecs.decode_kserve(body, "m", json_size)
    for name, array in arrays.items():
        assert_same(request.inputs[name], array)

    response = InferenceResponse(model="m", model_version="1", id="", outputs=request.inputs)
    body, header_length = codecs.encode_kserve(response, request)
    assert (header_length is not None) == binary_out
    result = triton.InferResult.from_response_body(body, header_length=header_length)
    for name, array in arrays.items():
        assert_same(result.as_numpy(name), array)


@settings(max_examples=100, deadline=None)
@given(texts=st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=5))
def test_openai_texts_round_trip(texts: list[str]) -> None:
    request = codecs.decode_openai_embeddings(orjson.dumps({"model": "m", "input": texts}))
    assert request.inputs["text"].tolist() == [t.encode() for t in texts]
    assert codecs.decode_texts(request.inputs["text"]) == texts


@settings(max_examples=100, deadline=None)
@given(
    vectors=hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 4), st.integers(1, 8)),
        elements=st.floats(allow_nan=False, allow_infinity=False, width=32),
    ),
    encoding_format=st.sampled_from(["float", "base64"]),
)
def test_openai_vectors_round_trip(vectors: np.ndarray, encoding_format: str) -> None:
    request = InferenceRequest(
        model="m", inputs={}, protocol="openai", parameters={"encoding_format": encoding_format}
    )
    response = InferenceResponse(
        model="m", model_version="1", id="", outputs={"embedding": vectors}
    )
    parsed = orjson.loads(codecs.encode_openai_embeddings(response, request))
    if encoding_format == "float":
        got = np.array([item["embedding"] for item in parsed["data"]], np.float32)
    else:
        got = np.array(
            [np.frombuffer(base64.b64decode(item["embedding"]), "<f4") for item in parsed["data"]]
        )
    assert got.tobytes() == vectors.tobytes() or np.array_equal(got, vectors)
