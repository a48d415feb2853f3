"""The OpenAPI 3.0 document of every route, served at ``GET /openapi.json``.

Written by hand (the inference routes are plain ASGI, so nothing could derive it) and built once
per server: it names the models this server serves, so a client or a fuzzer such as schemathesis
generates requests that reach a model, and it declares credentials only where this server asks
for them (see http/auth.py). Bodies follow the Open Inference Protocol (KServe v2) REST spec and
the OpenAI embeddings API; errors are ``{"error": "..."}`` on KServe routes and
``{"error": {"message", "type", "code"}}`` on OpenAI routes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dlproxy import __version__
from dlproxy.http.auth import Access, access_for
from dlproxy.types import DTYPES

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
    model_name: Schema = {"type": "string", "enum": list(models)} if models else _STRING
    return {
        "Error": _object({"error": _STRING}, ["error"]),
        "OpenAIError": _object(
            {
                "error": _object(
                    {
                        "message": _STRING,
                        "type": _STRING,
                        "code": {"nullable": True, "anyOf": [_STRING, _INTEGER]},
                    },
                    ["message", "type", "code"],
                )
            },
            ["error"],
        ),
        "Datatype": {"type": "string", "enum": list(DTYPES)},
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
                    "type": "array",
                    "items": _ref("InferRequestedOutput"),
                    "nullable": True,
                },
            },
            ["inputs"],
        ),
        "InferOutput": _object(
            {
                "name": _STRING,
                "shape": {"type": "array", "items": _COUNT},
                "datatype": _ref("Datatype"),
                "parameters": _object({"binary_data_size": _COUNT}),
                "data": {"type": "array", "items": {}},
            },
            ["name", "shape", "datatype"],
        ),
        "InferResponse": _object(
            {
                "model_name": _STRING,
                "model_version": _STRING,
                "id": _STRING,
                "outputs": {"type": "array", "items": _ref("InferOutput")},
            },
            ["model_name", "outputs"],
        ),
        "TensorMetadata": _object(
            {
                "name": _STRING,
                "datatype": _ref("Datatype"),
                "shape": {"type": "array", "items": _INTEGER},
            },
            ["name", "datatype", "shape"],
        ),
        "ModelMetadata": _object(
            {
                "name": _STRING,
                "versions": {"type": "array", "items": _STRING},
                "platform": _STRING,
                "inputs": {"type": "array", "items": _ref("TensorMetadata")},
                "outputs": {"type": "array", "items": _ref("TensorMetadata")},
                "max_batch_size": _INTEGER,
            },
            ["name", "platform", "inputs", "outputs"],
        ),
        "ServerMetadata": _object(
            {
                "name": _STRING,
                "version": _STRING,
                "extensions": {"type": "array", "items": _STRING},
            },
            ["name", "version", "extensions"],
        ),
        "ModelReady": _object({"name": _STRING, "ready": _BOOLEAN}, ["name", "ready"]),
        "EmbeddingsRequest": _object(
            {
                "model": model_name,
                "input": {
                    "oneOf": [
                        {"type": "string", "minLength": 1},
                        {
                            "type": "array",
                            "items": {"type": "string", "minLength": 1},
                            "minItems": 1,
                        },
                    ]
                },
                "encoding_format": {"type": "string", "enum": ["float", "base64"]},
                "dimensions": {"type": "integer", "minimum": 1, "nullable": True},
                "user": {"type": "string", "nullable": True},
            },
            ["model", "input"],
        ),
        "EmbeddingsResponse": _object(
            {
                "object": {"type": "string", "enum": ["list"]},
                "data": {
                    "type": "array",
                    "items": _object(
                        {
                            "object": {"type": "string", "enum": ["embedding"]},
                            "index": _COUNT,
                            "embedding": {
                                "oneOf": [
                                    {"type": "array", "items": _NUMBER},
                                    {"type": "string", "format": "byte"},
                                ]
                            },
                        },
                        ["object", "index", "embedding"],
                    ),
                },
                "model": _STRING,
                "usage": _object(
                    {"prompt_tokens": _COUNT, "total_tokens": _COUNT},
                    ["prompt_tokens", "total_tokens"],
                ),
            },
            ["object", "data", "model", "usage"],
        ),
        "ModelList": _object(
            {
                "object": {"type": "string", "enum": ["list"]},
                "data": {
                    "type": "array",
                    "items": _object(
                        {
                            "id": _STRING,
                            "object": {"type": "string", "enum": ["model"]},
                            "created": _INTEGER,
                            "owned_by": _STRING,
                        },
                        ["id", "object", "created", "owned_by"],
                    ),
                },
            },
            ["object", "data"],
        ),
        "Instance": _object(
            {
                "id": _STRING,
                "model": _STRING,
                "reference": _STRING,
                "state": {
                    "type": "string",
                    "enum": ["starting", "ready", "draining", "stopped", "failed"],
                },
                "pid": {"type": "integer", "nullable": True},
                "node": {"type": "string", "nullable": True},
                "threads": _INTEGER,
                "weight": _NUMBER,
                "inflight": _COUNT,
                "queue_depth": _COUNT,
                "latency_ewma_ms": _NUMBER,
                "batches": _COUNT,
                "items": _COUNT,
                "batch_limit": _COUNT,
                "service_time_ms": _NUMBER,
                "cpu_percent": {"type": "number", "nullable": True},
                "rss_bytes": {"type": "integer", "nullable": True},
            },
            ["id", "model", "state"],
        ),
        "Stats": _object(
            {
                "models": {"type": "object", "additionalProperties": {"type": "object"}},
                "cache": {"type": "object"},
                "coalesced": _COUNT,
                "rejected": {"type": "object", "additionalProperties": _COUNT},
                "gateway_pid": _INTEGER,
            },
            ["models", "cache", "coalesced", "rejected"],
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
                "description": "Accepted for compatibility; every model serves one version.",
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


def _paths(models: Sequence[str]) -> dict[str, Schema]:
    def get(summary: str, responses: dict[str, Schema], **extra: Any) -> Schema:
        return {"get": {"summary": summary, "responses": responses, **extra}}

    def infer(versioned: bool) -> Schema:
        return {
            "post": {
                "summary": "Run inference (Open Inference Protocol; JSON or binary tensors).",
                "description": (
                    "With the binary tensor extension the body is this JSON followed by the raw "
                    "tensors, the JSON's length in `Inference-Header-Content-Length`, and each "
                    "binary input declares `parameters.binary_data_size`."
                ),
                "parameters": _path_parameters(models, versioned) + _INFER_HEADERS,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": _ref("InferRequest"),
                            "example": _INFER_EXAMPLE,
                        }
                    },
                },
                "responses": {
                    "200": _infer_answer(),
                    **_errors((400, 401, 404, 413, 429, 500, 503, 504)),
                },
            }
        }

    def metadata(versioned: bool) -> Schema:
        return get(
            "Model metadata.",
            {
                "200": _json(_ref("ModelMetadata"), "The model's inputs and outputs."),
                **_errors((401, 404, 503)),
            },
            parameters=_path_parameters(models, versioned),
        )

    def ready(versioned: bool) -> Schema:
        return get(
            "Whether a model can take requests.",
            {
                "200": _json(_ref("ModelReady"), "Ready."),
                "404": _json(_ref("Error"), _REASONS[404]),
                "503": _json(_ref("ModelReady"), "Not ready yet."),
            },
            parameters=_path_parameters(models, versioned),
        )

    health = _object({"live": _BOOLEAN}, ["live"])
    readiness = _object({"ready": _BOOLEAN}, ["ready"])
    version = "/versions/{version}"
    return {
        "/v2/health/live": get("Liveness.", {"200": _json(health, "Live.")}),
        "/v2/health/ready": get(
            "Readiness: every model has a ready instance.",
            {"200": _json(readiness, "Ready."), "503": _json(readiness, "Not ready yet.")},
        ),
        "/v2": get(
            "Server metadata.",
            {"200": _json(_ref("ServerMetadata"), "Name, version, extensions."), **_errors((401,))},
        ),
        "/v2/models/{model}": metadata(False),
        f"/v2/models/{{model}}{version}": metadata(True),
        "/v2/models/{model}/ready": ready(False),
        f"/v2/models/{{model}}{version}/ready": ready(True),
        "/v2/models/{model}/infer": infer(False),
        f"/v2/models/{{model}}{version}/infer": infer(True),
        "/v1/embeddings": {
            "post": {
                "summary": "Embeddings (OpenAI-compatible).",
                "parameters": _INFER_HEADERS,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": _ref("EmbeddingsRequest"),
                            "examples": {
                                name: {"value": {"model": name, "input": ["a cat"]}}
                                for name in models or ["minilm"]
                            },
                        }
                    },
                },
                "responses": {
                    "200": _json(_ref("EmbeddingsResponse"), "The embeddings.", _ANSWER_HEADERS),
                    **_errors((400, 401, 404, 413, 429, 500, 503, 504), openai=True),
                },
            }
        },
        "/v1/models": get(
            "Served models (OpenAI-compatible).",
            {"200": _json(_ref("ModelList"), "The models."), **_errors((401,), openai=True)},
        ),
        "/admin/instances": get(
            "Every instance of every model.",
            {
                "200": _json({"type": "array", "items": _ref("Instance")}, "The instances."),
                **_errors((401, 403)),
            },
        ),
        "/admin/models/{model}/scale": {
            "post": {
                "summary": "Set a model's local instance count (added ones serve once ready; "
                "removed ones drain first).",
                "parameters": _path_parameters(models, False),
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["instances"],
                                "properties": {
                                    "instances": {"type": "integer", "minimum": 0, "maximum": 64}
                                },
                            },
                            "example": {"instances": 2},
                        }
                    },
                },
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {"model": _STRING, "instances": {"type": "integer"}},
                        },
                        "The new count.",
                    ),
                    **_errors((400, 401, 403, 404)),
                },
            }
        },
        "/metrics": get(
            "Prometheus metrics.",
            {
                "200": {
                    "description": "Prometheus text format.",
                    "content": {"text/plain": {"schema": _STRING}},
                }
            },
        ),
        "/stats": get(
            "The same figures as /metrics, as JSON.", {"200": _json(_ref("Stats"), "Figures.")}
        ),
        "/dashboard": get(
            "A live page of the figures in /stats.",
            {"200": {"description": "HTML.", "content": {"text/html": {"schema": _STRING}}}},
        ),
        "/openapi.json": get(
            "This document.", {"200": _json({"type": "object"}, "OpenAPI 3.0 document.")}
        ),
    }


def _secure(paths: dict[str, Schema], keys_required: bool, admin_token: bool) -> None:
    """Attach the credentials each operation needs on this server (as http/auth.py checks them)."""
    for path, item in paths.items():
        access = access_for(path.replace("{model}", "m").replace("{version}", "v"))
        for operation in item.values():
            if access is Access.ADMIN and admin_token:
                operation["security"] = [{"adminToken": []}]
            elif access is Access.KEY and keys_required:
                operation["security"] = [{"apiKey": []}, {"apiKeyHeader": []}]
            else:
                operation["security"] = []


def document(
    models: Sequence[str], keys_required: bool = False, admin_token: bool = False
) -> dict[str, Any]:
    """The OpenAPI document for a server serving ``models`` with the given credentials."""
    paths = _paths(models)
    _secure(paths, keys_required, admin_token)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "dlproxy",
            "version": __version__,
            "description": (
                "A deep-learning inference proxy: KServe v2 (Open Inference Protocol) and "
                "OpenAI-compatible embeddings in front of batched model instances."
            ),
        },
        "paths": paths,
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
