"""Wire formats <-> core types: KServe v2 (JSON and binary tensors) and OpenAI embeddings.

Pure functions with no HTTP framework, so the routes stay thin and these can be fuzzed alone
(``protocols.py`` wraps them in one object per protocol).
Decoders raise only ``BadRequest``, with a message that names the input, what was expected and
what came. They sit on the hot path: JSON is parsed by msgspec against typed schemas (type checks
happen in C while parsing), numeric tensors become numpy arrays with one conversion, and binary
tensors are zero-copy, read-only views of the body.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from functools import lru_cache
from itertools import chain
from typing import Annotated, Any, Literal

import msgspec
import numpy as np
import orjson

from dlproxy import kserve
from dlproxy.errors import BadRequest
from dlproxy.types import DTYPES, InferenceRequest, InferenceResponse, datatype_of

MAX_DIMS = 32
"""Most dimensions an input may have (numpy's own limit is 64)."""
MAX_ELEMENTS = 1 << 48
"""Most elements a shape may declare; keeps numpy's size arithmetic far from overflow."""

_WHITESPACE = frozenset(b" \t\r\n")
_ELEMENT: dict[str, type] = {
    name: bool if name == "BOOL" else str if name == "BYTES" else float if name[:2] == "FP" else int
    for name in DTYPES
}
# Client-side features that would change the answer's meaning; refused rather than ignored.
_UNSUPPORTED = ("shared_memory_region", "classification")


class _Input(msgspec.Struct):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] = {}
    data: msgspec.Raw = msgspec.Raw()  # parsed once the datatype is known


class _Output(msgspec.Struct):
    name: str
    parameters: dict[str, Any] = {}


class _KServeRequest(msgspec.Struct):
    inputs: list[_Input]
    id: str = ""
    parameters: dict[str, Any] = {}
    outputs: list[_Output] | None = None


class _EmbeddingsRequest(msgspec.Struct):
    model: str
    input: str | list[Any]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, msgspec.Meta(gt=0, le=1 << 31)] | None = None
    user: str | None = None


_KSERVE = msgspec.json.Decoder(_KServeRequest)
_EMBEDDINGS = msgspec.json.Decoder(_EmbeddingsRequest)


def _parse(decoder: msgspec.json.Decoder[Any], data: Any, what: str) -> Any:
    """Decode or raise BadRequest; msgspec's messages already say where (``at `$.inputs[0]```)."""
    try:
        return decoder.decode(data)
    except (msgspec.DecodeError, ValueError) as exc:  # ValueError: invalid UTF-8 in a string
        raise BadRequest(f"invalid {what}: {exc}") from None
    except RecursionError:
        raise BadRequest(f"invalid {what}: JSON nested too deeply") from None


# --- KServe v2 / Open Inference Protocol -------------------------------------------------------


InputCheck = Callable[[str, str, str, list[int]], None]
"""``check(model, input name, datatype, shape)``: raises to refuse an input before its data is
read (``Gateway.check_input``: the limits and the model's declared inputs)."""


def decode_kserve(
    body: bytes, model: str, header_length: int | None, check: InputCheck | None = None
) -> InferenceRequest:
    """Decode a KServe v2 infer request; ``header_length`` is Inference-Header-Content-Length.

    With a header length the JSON is that prefix of the body, and the inputs that declare
    ``binary_data_size`` take their bytes, in order, from the rest, which they must use exactly.
    Each input's name, datatype and shape go to ``check`` before its data is touched.
    """
    if not isinstance(body, bytes):
        body = bytes(body)
    if header_length is None:
        header: bytes | memoryview = body
        binary_start = len(body)
    elif 0 <= header_length <= len(body):
        header = memoryview(body)[:header_length]
        binary_start = header_length
    else:
        raise BadRequest(
            f"Inference-Header-Content-Length is {header_length} but the body has {len(body)} bytes"
        )
    parsed: _KServeRequest = _parse(_KSERVE, header, "inference request")
    if not parsed.inputs:
        raise BadRequest("the request has no inputs; send at least one in 'inputs'")

    inputs: dict[str, np.ndarray] = {}
    items = 0
    offset = binary_start
    for spec in parsed.inputs:
        if spec.name in inputs:
            raise BadRequest(f"input '{spec.name}' appears more than once")
        total = _check_shape(spec)
        if check is not None:
            check(model, spec.name, spec.datatype, spec.shape)
        size = _binary_size(spec, header_length)
        if size is None:
            array = _from_json(spec, total)
        else:
            if offset + size > len(body):
                raise BadRequest(
                    f"input '{spec.name}' declares binary_data_size {size} but only "
                    f"{len(body) - offset} bytes of binary data remain in the body"
                )
            array = _from_binary(spec, total, body, offset, size)
            offset += size
        if not items:
            items = spec.shape[0]
        elif spec.shape[0] != items:
            first = next(iter(inputs))
            raise BadRequest(
                f"input '{spec.name}' has {spec.shape[0]} items (shape {spec.shape}) but input "
                f"'{first}' has {items}; the first dimension of every input is the item axis"
            )
        inputs[spec.name] = array
    if offset != len(body):
        raise BadRequest(
            f"the body has {len(body) - offset} bytes after the JSON header and the inputs' "
            f"binary data (header {binary_start} bytes, binary data {offset - binary_start} bytes)"
        )

    outputs, parameters = _requested_outputs(parsed)
    return InferenceRequest(
        model=model, inputs=inputs, id=parsed.id, parameters=parameters, outputs=outputs
    )


def _check_shape(spec: _Input) -> int:
    """Validate the datatype and shape of an input; return its element count."""
    if spec.datatype not in DTYPES:
        raise BadRequest(
            f"input '{spec.name}' has unknown datatype '{spec.datatype}'; "
            f"expected one of {', '.join(DTYPES)}"
        )
    shape = spec.shape
    if not shape:
        raise BadRequest(
            f"input '{spec.name}' has shape []; its first dimension is the item axis, "
            "so a single item is shape [1]"
        )
    if len(shape) > MAX_DIMS:
        raise BadRequest(f"input '{spec.name}' has {len(shape)} dimensions; at most {MAX_DIMS}")
    total = 1
    nonzero = 1
    for dim in shape:
        if dim < 0:
            raise BadRequest(f"input '{spec.name}' has a negative dimension in shape {shape}")
        total *= dim
        nonzero *= dim or 1
        if nonzero > MAX_ELEMENTS:
            raise BadRequest(f"input '{spec.name}' shape {shape} is too large")
    if shape[0] == 0:
        raise BadRequest(f"input '{spec.name}' has 0 items (shape {shape}); send at least one")
    return total


def _binary_size(spec: _Input, header_length: int | None) -> int | None:
    """The input's binary_data_size, or None when its data is in the JSON."""
    for key in _UNSUPPORTED:
        if key in spec.parameters:
            raise BadRequest(f"input '{spec.name}': parameter '{key}' is not supported")
    size = spec.parameters.get("binary_data_size")
    if size is None:
        if not spec.data:
            raise BadRequest(f"input '{spec.name}' has neither 'data' nor binary_data_size")
        return None
    if type(size) is not int or size < 0:
        raise BadRequest(
            f"input '{spec.name}' binary_data_size must be a non-negative integer, got {size!r}"
        )
    if spec.data:
        raise BadRequest(f"input '{spec.name}' has both 'data' and binary_data_size")
    if header_length is None:
        raise BadRequest(
            f"input '{spec.name}' has binary_data_size but the request has no "
            "Inference-Header-Content-Length header"
        )
    return size


def _from_json(spec: _Input, total: int) -> np.ndarray:
    """Tensor data in the JSON, flat or nested row-major; types are checked while parsing."""
    depth = _nesting(spec.data)
    if depth == 0:
        raise BadRequest(f"input '{spec.name}' data must be a JSON array")
    if depth > len(spec.shape):
        raise BadRequest(
            f"input '{spec.name}' data is nested {depth} deep but its shape {spec.shape} "
            f"has {len(spec.shape)} dimensions"
        )
    decoder = _data_decoder(_ELEMENT[spec.datatype], depth)
    values = _parse(decoder, spec.data, f"data for input '{spec.name}' ({spec.datatype})")
    for _ in range(depth - 1):
        try:
            values = list(chain.from_iterable(values))
        except TypeError:  # unreachable with typed decoding; kept so nothing else escapes
            raise BadRequest(f"input '{spec.name}' data is not a nested list") from None
    if len(values) != total:
        raise BadRequest(
            f"input '{spec.name}' has shape {spec.shape} ({total} elements) "
            f"but its data has {len(values)}"
        )
    if spec.datatype == "BYTES":
        array = _object_array(_utf8(values, f"input '{spec.name}'"))
    else:
        dtype = DTYPES[spec.datatype]
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                array = np.array(values, dtype=dtype)
        except OverflowError:
            raise BadRequest(
                f"input '{spec.name}' has a value out of range for {spec.datatype}"
            ) from None
        if dtype.kind == "f" and not np.isfinite(array).all():
            raise BadRequest(f"input '{spec.name}' has a value out of range for {spec.datatype}")
    return array.reshape(spec.shape)


def _nesting(raw: msgspec.Raw) -> int:
    """How many '[' open the JSON value: the nesting depth of its first element."""
    depth = 0
    for byte in memoryview(raw):
        if byte == 0x5B:  # '['
            depth += 1
            if depth > MAX_DIMS:
                break
        elif byte not in _WHITESPACE:
            break
    return depth


@lru_cache(maxsize=64)
def _data_decoder(element: type, depth: int) -> msgspec.json.Decoder[Any]:
    """A decoder for ``depth`` nested lists of ``element``, built once per pair."""
    target: Any = element
    for _ in range(depth):
        target = list[target]
    return msgspec.json.Decoder(target)


def _from_binary(spec: _Input, total: int, body: bytes, offset: int, size: int) -> np.ndarray:
    """Tensor data from the binary section: a zero-copy view for numbers, framed for BYTES."""
    if spec.datatype == "BYTES":
        try:
            items = kserve.unframe(body, offset, size, total)
        except ValueError as exc:
            raise BadRequest(
                f"input '{spec.name}' has shape {spec.shape} ({total} elements) but its {exc}"
            ) from None
        return _object_array(items).reshape(spec.shape)
    dtype = DTYPES[spec.datatype].newbyteorder("<")
    expected = total * dtype.itemsize
    if size != expected:
        raise BadRequest(
            f"input '{spec.name}' ({spec.datatype}, shape {spec.shape}) needs {expected} bytes "
            f"of binary data, got binary_data_size {size}"
        )
    array = np.frombuffer(body, dtype=dtype, count=total, offset=offset)
    if spec.datatype == "BOOL" and total and array.view(np.uint8).max() > 1:
        raise BadRequest(f"input '{spec.name}' (BOOL) has a byte other than 0 or 1")
    if dtype.kind == "f" and not np.isfinite(array).all():  # as JSON refuses them
        raise BadRequest(f"input '{spec.name}' has a NaN or infinite value ({spec.datatype})")
    return array.reshape(spec.shape)


def _utf8(texts: list[str], what: str) -> list[bytes]:
    """UTF-8 of JSON strings; the parser refuses lone surrogates, this keeps them a 400 anyway."""
    try:
        return [text.encode("utf-8") for text in texts]
    except UnicodeEncodeError as exc:
        raise BadRequest(f"{what} holds a string that is not valid Unicode: {exc}") from None


def _object_array(items: list[bytes]) -> np.ndarray:
    """A 1-d object array of bytes (np.array would make a fixed-width, zero-stripping array)."""
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


def _requested_outputs(parsed: _KServeRequest) -> tuple[list[str] | None, dict[str, Any]]:
    """Requested output names (None: all) and request parameters with ``binary_outputs`` set."""
    parameters = dict(parsed.parameters)
    for key, value in parameters.items():
        check_encodable(value, key)
    default = parameters.get("binary_data_output", False)
    if type(default) is not bool:
        raise BadRequest(f"parameter binary_data_output must be true or false, got {default!r}")
    parameters["binary_data_output"] = default
    binary: dict[str, bool] = {}
    parameters["binary_outputs"] = binary
    if not parsed.outputs:
        return None, parameters
    for output in parsed.outputs:
        if output.name in binary:
            raise BadRequest(f"output '{output.name}' is requested more than once")
        for key in _UNSUPPORTED:
            if key in output.parameters:
                raise BadRequest(f"output '{output.name}': parameter '{key}' is not supported")
        wanted = output.parameters.get("binary_data", default)
        if type(wanted) is not bool:
            raise BadRequest(
                f"output '{output.name}' binary_data must be true or false, got {wanted!r}"
            )
        binary[output.name] = wanted
    return list(binary), parameters


def encode_kserve(
    response: InferenceResponse, request: InferenceRequest
) -> tuple[bytes, int | None]:
    """Encode an infer response: the body, and the JSON length when binary outputs follow it.

    Outputs are those requested (all when none were); each goes as binary when its request asked
    (``binary_outputs``, else ``binary_data_output``), as flat row-major JSON data otherwise.
    """
    default = bool(request.parameters.get("binary_data_output", False))
    binary: dict[str, bool] = request.parameters.get("binary_outputs") or {}
    names = request.outputs if request.outputs is not None else list(response.outputs)
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes | memoryview] = []
    for name in names:
        array = response.outputs.get(name)
        if array is None:
            raise BadRequest(
                f"model '{response.model}' has no output '{name}'; "
                f"it has {', '.join(response.outputs) or 'none'}"
            )
        entry: dict[str, Any] = {
            "name": name,
            "datatype": datatype_of(array),
            "shape": list(array.shape),
        }
        if binary.get(name, default):
            blob = kserve.tensor_blob(array)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = _json_of(name, array)
        outputs.append(entry)
    header = orjson.dumps(
        {
            "model_name": response.model,
            "model_version": response.model_version,
            "id": response.id or request.id,
            "outputs": outputs,
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
        default=_to_list,
    )
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def _json_of(name: str, array: np.ndarray) -> Any:
    """JSON data for an output: the flat array itself (orjson writes numpy natively), or strings."""
    if array.dtype != object:
        return array.ravel()
    texts: list[str] = []
    for index, item in enumerate(array.ravel().tolist()):
        if isinstance(item, str):
            texts.append(item)
            continue
        try:
            texts.append(bytes(item).decode("utf-8"))
        except (UnicodeDecodeError, TypeError):
            raise BadRequest(
                f"output '{name}' item {index} is not UTF-8 text; request it with binary_data"
            ) from None
    return texts


def _to_list(value: Any) -> Any:
    """orjson fallback for arrays it does not write natively (non-native byte order, unaligned)."""
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def encode_kserve_error(message: str) -> bytes:
    """A KServe error body."""
    return orjson.dumps({"error": message})


# --- OpenAI embeddings -------------------------------------------------------------------------


def decode_openai_embeddings(body: bytes, check: InputCheck | None = None) -> InferenceRequest:
    """Decode ``POST /v1/embeddings``: texts become the BYTES input ``text``, which goes to
    ``check`` before the texts are read.

    The model named is not checked here: the gateway answers unknown models with 404.
    """
    parsed: _EmbeddingsRequest = _parse(_EMBEDDINGS, body, "embeddings request")
    texts = [parsed.input] if isinstance(parsed.input, str) else parsed.input
    if not texts:
        raise BadRequest("'input' is an empty list; send at least one text", param="input")
    if check is not None:
        check(parsed.model, "text", "BYTES", [len(texts)])
    checked: list[str] = []
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            if type(text) is int or isinstance(text, list):
                raise BadRequest(
                    "'input' holds token ids: token arrays are not supported; send text",
                    param="input",
                )
            raise BadRequest(
                f"'input' item {index} must be a string, got {type(text).__name__}",
                param="input",
            )
        if not text:
            raise BadRequest(f"'input' item {index} is an empty string", param="input")
        checked.append(text)
    parameters: dict[str, Any] = {"encoding_format": parsed.encoding_format}
    if parsed.dimensions is not None:
        parameters["dimensions"] = parsed.dimensions
    if parsed.user is not None:
        parameters["user"] = parsed.user
    return InferenceRequest(
        model=parsed.model,
        inputs={"text": _object_array(_utf8(checked, "'input'"))},
        protocol="openai",
        parameters=parameters,
    )


def encode_openai_embeddings(
    response: InferenceResponse, request: InferenceRequest, prompt_tokens: int = 0
) -> bytes:
    """Encode the ``embedding`` output as an OpenAI list, as floats or base64 float32 (LE)."""
    embeddings = response.outputs.get("embedding")
    if embeddings is None or embeddings.ndim != 2:
        raise BadRequest(
            f"model '{response.model}' does not answer embeddings: it needs an output "
            "'embedding' of shape [n, d]"
        )
    width = embeddings.shape[1]
    dimensions = request.parameters.get("dimensions")
    if dimensions is not None and dimensions != width:
        raise BadRequest(
            f"'dimensions' is {dimensions} but model '{response.model}' gives {width}-dimensional "
            "embeddings; leave it out or send that number"
        )
    rows = np.ascontiguousarray(embeddings, dtype="<f4")
    if request.parameters.get("encoding_format") == "base64":
        vectors: list[Any] = [base64.b64encode(row).decode("ascii") for row in rows]
    else:
        vectors = list(rows)
    data = [
        {"object": "embedding", "index": index, "embedding": vector}
        for index, vector in enumerate(vectors)
    ]
    return orjson.dumps(
        {
            "object": "list",
            "data": data,
            "model": request.model or response.model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
        default=_to_list,
    )


def encode_openai_error(message: str, type: str, code: str, param: str | None = None) -> bytes:
    """An OpenAI error body, in OpenAI's shape: a string ``code`` and the ``param`` at fault."""
    return orjson.dumps({"error": {"message": message, "type": type, "param": param, "code": code}})


# --- Text inputs -------------------------------------------------------------------------------


def decode_texts(array: np.ndarray, name: str = "text") -> list[str]:
    """The texts of a BYTES input, in row-major order; non-UTF-8 is the client's error (400)."""
    if array.dtype != object:
        raise BadRequest(f"input '{name}' must be BYTES, got {array.dtype}")
    texts: list[str] = []
    for index, item in enumerate(array.ravel().tolist()):
        if isinstance(item, str):
            texts.append(item)
            continue
        if not isinstance(item, bytes | bytearray | memoryview):
            raise BadRequest(f"input '{name}' item {index} is not text")
        try:
            texts.append(bytes(item).decode("utf-8"))
        except UnicodeDecodeError:
            raise BadRequest(f"input '{name}' item {index} is not valid UTF-8") from None
    return texts


INT64 = (-(1 << 63), (1 << 63) - 1)
MAX_NESTING = 32


def check_encodable(value: Any, path: str, depth: int = 0) -> None:
    """Refuse (400) a request parameter that decodes from JSON but could not travel to a worker
    or into a cache key: an integer beyond 64 bits, nesting deeper than ``MAX_NESTING``."""
    if depth > MAX_NESTING:
        raise BadRequest(f"parameter '{path}' is nested more than {MAX_NESTING} levels deep")
    if type(value) is int and not INT64[0] <= value <= INT64[1]:
        raise BadRequest(f"parameter '{path}' is an integer beyond 64 bits; the limit is +-2**63")
    if isinstance(value, list):
        for index, item in enumerate(value):
            check_encodable(item, f"{path}[{index}]", depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            check_encodable(item, f"{path}.{key}", depth + 1)


def int_header(value: bytes | None, name: str) -> int | None:
    """An integer header, or None when absent; anything else is the client's error (400)."""
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise BadRequest(f"header {name} must be an integer, got {value[:40]!r}") from None
