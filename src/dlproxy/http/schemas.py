"""The JSON bodies of the HTTP API as msgspec types: the handlers encode these, and the OpenAPI
document's schemas are generated from them (``openapi.py``), so the two cannot disagree.

Inference bodies are decoded and encoded on the hot path by ``codecs.py``; their types here
(``InferResponse``, ``EmbeddingsRequest``, ``EmbeddingsResponse``) describe exactly what that code
reads and writes, and the schemathesis test checks every answer against them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

Count = Annotated[int, msgspec.Meta(ge=0)]
Text = Annotated[str, msgspec.Meta(min_length=1)]
State = Literal["starting", "ready", "unhealthy", "ejected", "draining", "stopped", "failed"]


class Error(msgspec.Struct):
    """A KServe error: ``{"error": "..."}``."""

    error: str


class OpenAIErrorDetail(msgspec.Struct):
    message: str
    type: str
    param: str | None
    code: str


class OpenAIError(msgspec.Struct):
    """An OpenAI error: ``{"error": {"message", "type", "param", "code"}}``, as OpenAI sends."""

    error: OpenAIErrorDetail


class Live(msgspec.Struct):
    live: bool


class Ready(msgspec.Struct):
    ready: bool


class ServerMetadata(msgspec.Struct):
    name: str
    version: str
    extensions: list[str]


class TensorMetadata(msgspec.Struct):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(msgspec.Struct):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    max_batch_size: int


class ModelReady(msgspec.Struct):
    name: str
    ready: bool


class ModelEntry(msgspec.Struct):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(msgspec.Struct):
    object: Literal["list"]
    data: list[ModelEntry]


class Instance(msgspec.Struct):
    """One row of ``GET /admin/instances``."""

    id: str
    model: str
    version: str  # "" for a model served without versions
    reference: str
    state: State
    pid: int | None
    node: str | None  # Ray actors: the cluster node
    threads: int
    weight: float
    inflight: Count
    queue_depth: Count
    latency_ewma_ms: float
    batches: Count
    items: Count
    batch_limit: Count  # what batching/policy.py allows now (moves under --batching adaptive)
    service_time_ms: float
    cpu_percent: float
    rss_bytes: int


class Scale(msgspec.Struct):
    """The body of ``POST /admin/models/{m}/scale``."""

    instances: Annotated[int, msgspec.Meta(ge=0, le=64)]


class Scaled(msgspec.Struct):
    model: str
    instances: int


class RepositoryModel(msgspec.Struct, omit_defaults=True):
    """One row of ``POST /v2/repository/index`` (the KServe v2 repository extension)."""

    name: str
    state: Literal["READY", "LOADING", "UNAVAILABLE"]
    version: str = ""
    reason: str = ""


class RepositoryIndexRequest(msgspec.Struct):
    ready: bool = False  # only the ready ones


class RepositoryLoadRequest(msgspec.Struct, forbid_unknown_fields=True):
    """``load`` and ``unload`` bodies; a config or files override is not supported."""

    parameters: dict[str, bool | int | str] = {}


class Stats(msgspec.Struct):
    """``GET /stats``: the figures of ``/metrics`` as JSON (see ``metrics.stats``)."""

    models: dict[str, dict[str, Any]]
    cache: dict[str, Any]
    coalesced: Count
    rejected: dict[str, Count]
    shadow: dict[str, dict[str, Any]]
    lifecycle: dict[str, Any]
    gateway_pid: int


class InferOutputParameters(msgspec.Struct, omit_defaults=True):
    binary_data_size: Count | None = None


class InferOutput(msgspec.Struct, omit_defaults=True):
    name: str
    datatype: str
    shape: list[Count]
    data: list[Any] | None = None
    parameters: InferOutputParameters | None = None


class InferResponse(msgspec.Struct):
    model_name: str
    model_version: str
    id: str
    outputs: list[InferOutput]


class EmbeddingsRequest(msgspec.Struct):
    """What ``POST /v1/embeddings`` accepts. The decoder reads ``input`` more loosely, to name
    what is wrong (token ids, an empty string) in its own words."""

    model: str
    input: Text | Annotated[list[Text], msgspec.Meta(min_length=1)]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, msgspec.Meta(ge=1)] | None = None
    user: str | None = None


class Embedding(msgspec.Struct):
    object: Literal["embedding"]
    index: Count
    embedding: list[float] | str  # floats, or base64 of little-endian float32


class Usage(msgspec.Struct):
    prompt_tokens: Count
    total_tokens: Count


class EmbeddingsResponse(msgspec.Struct):
    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: Usage


DOCUMENTED: tuple[type[msgspec.Struct], ...] = (
    Error,
    OpenAIError,
    Live,
    Ready,
    ServerMetadata,
    ModelMetadata,
    ModelReady,
    ModelList,
    Instance,
    Scale,
    Scaled,
    Stats,
    RepositoryModel,
    RepositoryIndexRequest,
    RepositoryLoadRequest,
    InferResponse,
    EmbeddingsRequest,
    EmbeddingsResponse,
)
"""The types whose schemas the OpenAPI document's components hold (with what they refer to)."""
