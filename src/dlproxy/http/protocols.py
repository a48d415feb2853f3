"""One codec object per protocol: all the inference route knows of a protocol.

Each turns a body into an ``InferenceRequest``, an answer into (body, extra headers, content type),
and an error into the protocol's error body; the work is ``codecs.py``'s functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from dlproxy.http.codecs import (
    InputCheck,
    decode_kserve,
    decode_openai_embeddings,
    encode_kserve,
    encode_kserve_error,
    encode_openai_embeddings,
    encode_openai_error,
    int_header,
)
from dlproxy.http.errors import OPENAI_CODES, OPENAI_TYPES
from dlproxy.types import InferenceRequest, InferenceResponse

JSON = b"application/json"
OCTET_STREAM = b"application/octet-stream"
Headers = list[tuple[bytes, bytes]]


class Codec(Protocol):
    """Body -> InferenceRequest -> (answer, its extra headers, its content type); error bodies."""

    protocol: str

    def decode(
        self,
        body: bytes,
        model: str,
        headers: Mapping[bytes, bytes],
        check: InputCheck | None = None,
    ) -> InferenceRequest: ...

    def encode(
        self, response: InferenceResponse, request: InferenceRequest
    ) -> tuple[bytes, Headers, bytes]: ...

    def error(self, status: int, message: str, param: str | None = None) -> bytes: ...


class KServeCodec:
    """KServe v2 / Open Inference Protocol, JSON or with the binary tensor extension."""

    protocol = "kserve"

    def decode(
        self,
        body: bytes,
        model: str,
        headers: Mapping[bytes, bytes],
        check: InputCheck | None = None,
    ) -> InferenceRequest:
        length = headers.get(b"inference-header-content-length")
        header_length = int_header(length, "Inference-Header-Content-Length")
        return decode_kserve(body, model, header_length, check)

    def encode(
        self, response: InferenceResponse, request: InferenceRequest
    ) -> tuple[bytes, Headers, bytes]:
        payload, json_length = encode_kserve(response, request)
        if json_length is None:
            return payload, [], JSON
        # Binary outputs follow the JSON (as Triton sends them).
        return (
            payload,
            [(b"inference-header-content-length", str(json_length).encode())],
            OCTET_STREAM,
        )

    def error(self, status: int, message: str, param: str | None = None) -> bytes:
        return encode_kserve_error(message)


class OpenAICodec:
    """OpenAI ``/v1/embeddings``; errors in OpenAI's shape."""

    protocol = "openai"

    def decode(
        self,
        body: bytes,
        model: str,
        headers: Mapping[bytes, bytes],
        check: InputCheck | None = None,
    ) -> InferenceRequest:
        return decode_openai_embeddings(body, check)

    def encode(
        self, response: InferenceResponse, request: InferenceRequest
    ) -> tuple[bytes, Headers, bytes]:
        return encode_openai_embeddings(response, request), [], JSON

    def error(self, status: int, message: str, param: str | None = None) -> bytes:
        return encode_openai_error(
            message, OPENAI_TYPES.get(status, "error"), OPENAI_CODES.get(status, "error"), param
        )


CODECS: dict[str, Codec] = {"kserve": KServeCodec(), "openai": OpenAICodec()}


def codec_for(path: str) -> Codec:
    """The protocol a path speaks, for its error bodies: OpenAI under ``/v1``, else KServe."""
    return CODECS["openai" if path.startswith("/v1/") else "kserve"]
