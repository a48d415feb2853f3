"""The OpenAPI 3.1 document of every route, served at ``GET /openapi.json``.

Derived, and built once per server: the paths, methods and credentials from the route table
(``table.ENDPOINTS``), the body schemas from the msgspec types the handlers encode
(``schemas.py``). Written by hand only what no type can say: an infer input's element type per
datatype, the names of the models this server serves (so a client or a fuzzer such as
schemathesis generates requests that reach a model), and each operation's summary and answers.
Bodies follow the Open Inference Protocol (KServe v2) REST spec and the OpenAI embeddings API;
errors are ``{"error": "..."}`` on KServe routes and ``{"error": {"message", "type", "code"}}``
on OpenAI routes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import numpy as np

from dlproxy.http import schemas
from dlproxy.http.table import ENDPOINTS, Access, Endpoint
from dlproxy.types import DTYPES
from dlproxy.version import __version__

Schema = dict[str, Any]

_REASONS = {
    400: "Bad input: malformed body, or inputs that do not match the model.",
    401: "Missing or invalid credentials (with `WWW-Authenticate: Bearer`).",
    403: "Valid credentials that do not open this route.",
    404: "No model of that name is served.",
    413: "The body, the item count or a text is over its limit.",
    429: "This client is over its rate limit (with `Retry-After`).",
    500: "The model raised while computing the batch.",
    503: "Overloaded, or the model is still loading (with `Retry-After`).",
    504: "The deadline (`X-Request-Timeout-Ms`) passed before the answer was ready.",
}

_STRING = {"type": "string"}
_INTEGER = {"type": "integer"}
_COUNT = {"type": "integer", "minimum": 0}
_NUMBER = {"type": "number"}
_BOOLEAN = {"type": "boolean"}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: dict[str, Schema], required: Sequence[str] = ()) -> Schema:
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


def _json(schema: Schema, description: str, headers: dict[str, Any] | None = None) -> Schema:
    response: Schema = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if headers:
        response["headers"] = headers
    return response


_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait.", "schema": _INTEGER}}


def _errors(codes: Sequence[int], openai: bool = False) -> dict[str, Schema]:
    error = _ref("OpenAIError" if openai else "Error")
    responses = {}
    for code in codes:
        headers = _RETRY_AFTER if code in (429, 503) else None
        if code == 401:
            headers = {"WWW-Authenticate": {"description": "`Bearer`.", "schema": _STRING}}
        responses[str(code)] = _json(error, _REASONS[code], headers)
    return responses


def _element(datatype: str) -> Schema:
    """The JSON type of one element of a datatype, with its range: what the decoder accepts."""
    if datatype == "BYTES":
        return _STRING
    if datatype == "BOOL":
        return _BOOLEAN
    dtype = DTYPES[datatype]
    if dtype.kind == "f":
        largest = float(np.finfo(dtype).max)
        return {"type": "number", "minimum": -largest, "maximum": largest}
    bounds = np.iinfo(dtype)
    return {"type": "integer", "minimum": int(bounds.min), "maximum": int(bounds.max)}


def _infer_input(datatype: str) -> Schema:
    return _object(
        {
            "name": _STRING,
            "shape": _ref("Shape"),
            "datatype": {"type": "string", "enum": [datatype]},
            "parameters": {
                "type": "object",
                "description": "`binary_data_size` belongs to the binary tensor extension.",
            },
            "data": {"type": "array", "items": _element(datatype)},
        },
        ["name", "shape", "datatype", "data"],
    )


def _schemas(models: Sequence[str]) -> dict[str, Schema]:
    """The component schemas: generated from ``schemas.DOCUMENTED``, plus the infer request,
    whose element types per datatype no type can say."""
    _, components = msgspec.json.schema_components(
        schemas.DOCUMENTED, ref_template="#/components/schemas/{name}"
    )
    if models:  # requests that name a served model reach it
        components["EmbeddingsRequest"]["properties"]["model"] = {
            "type": "string",
            "enum": list(models),
        }
    return {
        **components,
        "Shape": {
            "type": "array",
            "items": _COUNT,
            "minItems": 1,
            "maxItems": 32,
            "description": "The first dimension is the item (batch) axis.",
        },
        "InferInput": {
            "description": (
                "One input tensor. `data` holds the elements in row-major order, flat (as here) "
                "or nested as the shape; the first dimension of `shape` is the item axis and "
                "the element count must equal the product of `shape`."
            ),
            "oneOf": [_infer_input(datatype) for datatype in DTYPES],
        },
        "InferRequestedOutput": _object(
            {"name": _STRING, "parameters": _object({"binary_data": _BOOLEAN})}, ["name"]
        ),
        "InferRequest": _object(
            {
                "id": _STRING,
                "parameters": _object({"binary_data_output": _BOOLEAN}),
                "inputs": {"type": "array", "items": _ref("InferInput"), "minItems": 1},
                "outputs": {
                    "anyOf": [
                        {"type": "array", "items": _ref("InferRequestedOutput")},
                        {"type": "null"},
                    ]
                },
            },
            ["inputs"],
        ),
    }


def _path_parameters(models: Sequence[str], versioned: bool) -> list[Schema]:
    model: Schema = {"type": "string", "enum": list(models)} if models else _STRING
    parameters: list[Schema] = [{"name": "model", "in": "path", "required": True, "schema": model}]
    if models:
        parameters[0]["examples"] = {name: {"value": name} for name in models}
    if versioned:
        parameters.append(
            {
                "name": "version",
                "in": "path",
                "required": True,
                "description": (
                    "A version the model serves (a repository model: those its version "
                    "policy names); a model served with --model answers every version."
                ),
                "schema": {"type": "string", "minLength": 1},
            }
        )
    return parameters


_INFER_HEADERS = [
    {
        "name": "X-Request-Timeout-Ms",
        "in": "header",
        "description": "Deadline in milliseconds; past it the answer is 504.",
        "schema": {"type": "integer", "minimum": 1},
        "example": 30000,
    },
    {
        "name": "X-Session-Key",
        "in": "header",
        "description": "Key for the consistent_hash scheduling policy.",
        "schema": _STRING,
    },
    {
        "name": "X-Request-Id",
        "in": "header",
        "description": "Echoed in the response; generated when absent.",
        "schema": _STRING,
    },
    {
        "name": "X-Priority",
        "in": "header",
        "description": (
            "Served before lower levels waiting for the same instance (0, the default, to 9); "
            "the KServe parameter 'priority' says the same."
        ),
        "schema": {"type": "integer", "minimum": 0, "maximum": 9},
    },
]

_INFER_EXAMPLE = {
    "id": "1",
    "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a cat", "a dog"]}],
}

_ANSWER_HEADERS = {
    "X-Request-Id": {"schema": _STRING},
    "X-Dlproxy-Instance": {"description": "The instance that computed it.", "schema": _STRING},
    "X-Dlproxy-Cache": {
        "description": "The worst cache outcome of the request's items.",
        "schema": {"type": "string", "enum": ["miss", "l1", "l2", "coalesced"]},
    },
    "X-Dlproxy-Load-Wait-Ms": {
        "description": "How long the request waited for its model to load (--memory-budget); "
        "absent when it did not wait.",
        "schema": {"type": "string"},
    },
}


def _infer_answer() -> Schema:
    """JSON, or with binary outputs the JSON header followed by the raw tensors (as Triton)."""
    binary = {"type": "string", "format": "binary"}
    length = {
        "description": "Length of the JSON header before the binary outputs.",
        "schema": _INTEGER,
    }
    return {
        "description": "The outputs.",
        "headers": {**_ANSWER_HEADERS, "Inference-Header-Content-Length": length},
        "content": {
            "application/json": {"schema": _ref("InferResponse")},
            "application/octet-stream": {"schema": binary},
        },
    }


Operation = Callable[[Endpoint, Sequence[str]], Schema]


def _get(summary: str, responses: dict[str, Schema], **extra: Any) -> Schema:
    return {"summary": summary, "responses": responses, **extra}


def _fixed(summary: str, responses: dict[str, Schema]) -> Operation:
    return lambda endpoint, models: _get(summary, responses)


def _infer(endpoint: Endpoint, models: Sequence[str]) -> Schema:
    return {
        "summary": "Run inference (Open Inference Protocol; JSON or binary tensors).",
        "description": (
            "With the binary tensor extension the body is this JSON followed by the raw "
            "tensors, the JSON's length in `Inference-Header-Content-Length`, and each "
            "binary input declares `parameters.binary_data_size`."
        ),
        "parameters": _path_parameters(models, endpoint.versioned) + _INFER_HEADERS,
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": _ref("InferRequest"), "example": _INFER_EXAMPLE}
            },
        },
        "responses": {
            "200": _infer_answer(),
            **_errors((400, 401, 404, 413, 429, 500, 503, 504)),
        },
    }


def _embeddings(endpoint: Endpoint, models: Sequence[str]) -> Schema:
    examples = {
        name: {"value": {"model": name, "input": ["a cat"]}} for name in models or ["minilm"]
    }
    return {
        "summary": "Embeddings (OpenAI-compatible).",
        "parameters": _INFER_HEADERS,
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": _ref("EmbeddingsRequest"), "examples": examples}
            },
        },
        "responses": {
            "200": _json(_ref("EmbeddingsResponse"), "The embeddings.", _ANSWER_HEADERS),
            **_errors((400, 401, 404, 413, 429, 500, 503, 504), openai=True),
        },
    }


def _metadata(endpoint: Endpoint, models: Sequence[str]) -> Schema:
    return _get(
        "Model metadata.",
        {
            "200": _json(_ref("ModelMetadata"), "The model's inputs and outputs."),
            **_errors((401, 404, 503)),
        },
        parameters=_path_parameters(models, endpoint.versioned),
    )


def _model_ready(endpoint: Endpoint, models: Sequence[str]) -> Schema:
    return _get(
        "Whether a model can take requests.",
        {
            "200": _json(_ref("ModelReady"), "Ready."),
            "404": _json(_ref("Error"), _REASONS[404]),
            "503": _json(_ref("ModelReady"), "Not ready yet."),
        },
        parameters=_path_parameters(models, endpoint.versioned),
    )


def _scale(endpoint: Endpoint, models: Sequence[str]) -> Schema:
    return {
        "summary": "Set a model's local instance count (added ones serve once ready; "
        "removed ones drain first).",
        "parameters": _path_parameters(models, False),
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ref("Scale"), "example": {"instances": 2}}},
        },
        "responses": {
            "200": _json(_ref("Scaled"), "The new count."),
            **_errors((400, 401, 403, 404)),
        },
    }


def _repository_change(summary: str) -> Operation:
    def operation(endpoint: Endpoint, models: Sequence[str]) -> Schema:
        return {
            "summary": summary,
            "parameters": _path_parameters(models, False),
            "requestBody": {
                "required": False,
                "content": {"application/json": {"schema": _ref("RepositoryLoadRequest")}},
            },
            "responses": {"200": {"description": "Done."}, **_errors((400, 401, 403, 404))},
        }

    return operation


_OPERATIONS: dict[str, Operation] = {
    "repository_index": lambda endpoint, models: {
        "summary": "The models of the repository and their state (KServe v2 repository extension).",
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": _ref("RepositoryIndexRequest")}},
        },
        "responses": {
            "200": _json({"type": "array", "items": _ref("RepositoryModel")}, "The models."),
            **_errors((400, 401, 403)),
        },
    },
    "repository_load": _repository_change(
        "(Re)load a model from the repository: its versions warm up, then take traffic."
    ),
    "repository_unload": _repository_change(
        "Unload a model: new requests get 404 at once, what it holds finishes."
    ),
    "live": _fixed("Liveness.", {"200": _json(_ref("Live"), "Live.")}),
    "ready": _fixed(
        "Readiness: every model has a ready instance.",
        {"200": _json(_ref("Ready"), "Ready."), "503": _json(_ref("Ready"), "Not ready yet.")},
    ),
    "server_metadata": _fixed(
        "Server metadata.",
        {"200": _json(_ref("ServerMetadata"), "Name, version, extensions."), **_errors((401,))},
    ),
    "model_metadata": _metadata,
    "model_ready": _model_ready,
    "infer": _infer,
    "embeddings": _embeddings,
    "openai_models": _fixed(
        "Served models (OpenAI-compatible).",
        {"200": _json(_ref("ModelList"), "The models."), **_errors((401,), openai=True)},
    ),
    "admin_instances": _fixed(
        "Every instance of every model.",
        {
            "200": _json({"type": "array", "items": _ref("Instance")}, "The instances."),
            **_errors((401, 403)),
        },
    ),
    "admin_scale": _scale,
    "prometheus": _fixed(
        "Prometheus metrics.",
        {
            "200": {
                "description": "Prometheus text format.",
                "content": {"text/plain": {"schema": _STRING}},
            }
        },
    ),
    "stats": _fixed(
        "The same figures as /metrics, as JSON.", {"200": _json(_ref("Stats"), "Figures.")}
    ),
    "dashboard": _fixed(
        "A live page of the figures in /stats.",
        {"200": {"description": "HTML.", "content": {"text/html": {"schema": _STRING}}}},
    ),
    "openapi": _fixed(
        "This document.", {"200": _json({"type": "object"}, "OpenAPI 3.1 document.")}
    ),
}


def _paths(models: Sequence[str], keys_required: bool, admin_token: bool) -> dict[str, Schema]:
    """One operation per route of the table, with the credentials it needs on this server."""
    paths: dict[str, Schema] = {}
    for endpoint in ENDPOINTS:
        operation = _OPERATIONS[endpoint.name](endpoint, models)
        operation["security"] = _security(endpoint.access, keys_required, admin_token)
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = operation
    return paths


def _security(access: Access, keys_required: bool, admin_token: bool) -> list[Schema]:
    """The credentials an operation needs on this server (as http/auth.py checks them)."""
    if access is Access.ADMIN and admin_token:
        return [{"adminToken": []}]
    if access is Access.KEY and keys_required:
        return [{"apiKey": []}, {"apiKeyHeader": []}]
    return []


def document(
    models: Sequence[str], keys_required: bool = False, admin_token: bool = False
) -> dict[str, Any]:
    """The OpenAPI document for a server serving ``models`` with the given credentials."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "dlproxy",
            "version": __version__,
            "description": (
                "A deep-learning inference proxy: KServe v2 (Open Inference Protocol) and "
                "OpenAI-compatible embeddings in front of batched model instances."
            ),
        },
        "paths": _paths(models, keys_required, admin_token),
        "components": {
            "schemas": _schemas(models),
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key as `Authorization: Bearer <key>`.",
                },
                "apiKeyHeader": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Api-Key",
                    "description": "An API key in `X-Api-Key` (or `api-key`).",
                },
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The admin token as `Authorization: Bearer <token>`.",
                },
            },
        },
    }
