"""HTTP routes. The two inference routes are plain ASGI (the hot path); the rest is Starlette.

Inference: ``POST /v2/models/{m}[/versions/{v}]/infer`` (KServe v2 JSON and binary tensors) and
``POST /v1/embeddings`` (OpenAI). Each decodes to an InferenceRequest, calls ``Gateway.infer`` and
encodes the answer; every error is mapped once, in ``http/errors.py``.
"""

from __future__ import annotations

import itertools
import os
import time
from importlib.resources import files
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from dlproxy import __version__
from dlproxy.errors import BadRequest, PayloadTooLarge
from dlproxy.gateway import Gateway
from dlproxy.http import codecs, openapi
from dlproxy.http.auth import Authenticator, AuthGate
from dlproxy.http.errors import OPENAI_TYPES, describe
from dlproxy.http.ratelimit import RateLimiter
from dlproxy.logging import access
from dlproxy.metrics import RequestMetrics, registry_for, stats
from dlproxy.types import InferenceRequest, ModelSpec

JSON = b"application/json"
OCTET_STREAM = b"application/octet-stream"
REJECTIONS = {413: "too_large", 429: "rate_limited", 503: "overloaded", 504: "deadline"}
_ids = itertools.count(1)
_id_prefix = os.urandom(4).hex()


def _new_id() -> str:
    return f"{_id_prefix}-{next(_ids):x}"


class InferenceApp:
    """The ASGI application: inference routes by hand, everything else through Starlette."""

    def __init__(
        self,
        gateway: Gateway,
        max_body_bytes: int,
        default_timeout_ms: float | None = None,
        limiter: RateLimiter | None = None,
        access_log: bool = False,
        metrics: RequestMetrics | None = None,
        auth: Authenticator | None = None,
    ) -> None:
        self.gateway = gateway
        self.max_body_bytes = max_body_bytes
        self.default_timeout_ms = default_timeout_ms
        self.metrics = metrics or RequestMetrics()
        self.limiter = limiter
        self.access_log = access_log
        self.auth = auth or Authenticator()
        self.other = AuthGate(build_starlette(gateway, self.metrics, self.auth), self.auth)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            if path == "/v1/embeddings":
                await self._infer(scope, receive, send, openai=True, model="")
                return
            if path.startswith("/v2/models/") and path.endswith("/infer"):
                model = path[11:-6].split("/", 1)[0]
                await self._infer(scope, receive, send, openai=False, model=model)
                return
        await self.other(scope, receive, send)

    async def _infer(
        self, scope: Scope, receive: Receive, send: Send, *, openai: bool, model: str
    ) -> None:
        started = time.perf_counter()
        headers = dict(scope["headers"])
        request_id = (headers.get(b"x-request-id") or b"").decode("latin-1") or _new_id()
        request: InferenceRequest | None = None
        try:
            if self.auth.keys_required:  # before the rate limit: it keys buckets by credential
                self.auth.check_key(headers)
            if self.limiter is not None:
                client = scope.get("client") or ("", 0)
                self.limiter.check(
                    (headers.get(b"authorization") or b"").decode("latin-1") or client[0]
                )
            body = await self._read_body(headers, receive)
            if openai:
                request = codecs.decode_openai_embeddings(body)
            else:
                header_length = headers.get(b"inference-header-content-length")
                request = codecs.decode_kserve(
                    body, model, _int_header(header_length, "Inference-Header-Content-Length")
                )
            if not request.id:  # a KServe body may carry its own id; it is echoed in the body
                request.id = request_id
            session = headers.get(b"x-session-key")
            if session:
                request.session_key = session.decode("latin-1")
            timeout = headers.get(b"x-request-timeout-ms")
            timeout_ms = (
                _int_header(timeout, "X-Request-Timeout-Ms")
                if timeout is not None
                else self.default_timeout_ms
            )
            if timeout_ms is not None:
                if timeout_ms <= 0:
                    raise BadRequest(
                        "X-Request-Timeout-Ms must be a positive number of milliseconds"
                    )
                request.deadline = _loop_time() + timeout_ms / 1000
            response = await self.gateway.infer(request)
            extra: list[tuple[bytes, bytes]] = []
            content_type = JSON
            if openai:
                payload = codecs.encode_openai_embeddings(response, request)
            else:
                payload, json_length = codecs.encode_kserve(response, request)
                if json_length is not None:  # binary outputs follow the JSON (as Triton sends)
                    extra.append((b"inference-header-content-length", str(json_length).encode()))
                    content_type = OCTET_STREAM
            extra += [
                (b"x-dlproxy-instance", response.instance.encode()),
                (b"x-dlproxy-cache", response.cache.encode()),
            ]
            await _respond(send, 200, payload, request_id, extra, content_type)
            elapsed = time.perf_counter() - started
            self.metrics.record(request.model, "openai" if openai else "kserve", 200, elapsed)
            if self.access_log:
                access(
                    request_id,
                    request.model,
                    "openai" if openai else "kserve",
                    200,
                    elapsed,
                    response.instance,
                    response.cache,
                )
        except Exception as exc:
            status, message, extra = describe(exc)
            label = self._model_label(request.model if request is not None else model)
            elapsed = time.perf_counter() - started
            self.metrics.record(label, "openai" if openai else "kserve", status, elapsed)
            if self.access_log:
                access(request_id, label, "openai" if openai else "kserve", status, elapsed, "", "")
            if status in REJECTIONS:
                self.metrics.reject(label, REJECTIONS[status])
            if openai:
                payload = codecs.encode_openai_error(
                    message, OPENAI_TYPES.get(status, "error"), status
                )
            else:
                payload = codecs.encode_kserve_error(message)
            await _respond(send, status, payload, request_id, extra)

    def _model_label(self, model: str) -> str:
        """Metric label for a model name: only served names, so clients cannot add series."""
        return model if model in self.gateway.pools else "unknown"

    async def _read_body(self, headers: dict[bytes, bytes], receive: Receive) -> bytes:
        length = headers.get(b"content-length")
        declared = _int_header(length, "Content-Length")
        if declared is not None and declared > self.max_body_bytes:
            raise PayloadTooLarge(
                f"the body is {declared} bytes; the limit is {self.max_body_bytes}"
            )
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise BadRequest("the client disconnected before sending the whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise PayloadTooLarge(f"the body is over the limit of {self.max_body_bytes} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _loop_time() -> float:
    import asyncio

    return asyncio.get_running_loop().time()


def _int_header(value: bytes | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise BadRequest(f"header {name} must be an integer, got {value[:40]!r}") from None


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    request_id: str,
    extra: list[tuple[bytes, bytes]],
    content_type: bytes = JSON,
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                (b"x-request-id", request_id.encode()),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class ORJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def _metadata(spec: ModelSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "versions": [spec.version],
        "platform": spec.platform,
        "inputs": [
            {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in spec.inputs
        ],
        "outputs": [
            {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in spec.outputs
        ],
        "max_batch_size": spec.max_batch_size,
    }


def build_starlette(gateway: Gateway, metrics: RequestMetrics, auth: Authenticator) -> Starlette:
    """The non-hot routes: health, metadata, model lists, admin."""

    def error(status: int, message: str) -> Response:
        return ORJSONResponse({"error": message}, status_code=status)

    async def live(request: Request) -> Response:
        return ORJSONResponse({"live": True})

    async def ready(request: Request) -> Response:
        return ORJSONResponse({"ready": gateway.ready}, status_code=200 if gateway.ready else 503)

    async def server_metadata(request: Request) -> Response:
        return ORJSONResponse(
            {"name": "dlproxy", "version": __version__, "extensions": ["binary_tensor_data"]}
        )

    async def model_metadata(request: Request) -> Response:
        name = request.path_params["model"]
        pool = gateway.pools.get(name)
        if pool is None:
            return error(
                404,
                f"model '{name}' is not served here (served: {', '.join(sorted(gateway.pools))})",
            )
        if pool.spec is None:
            return error(503, f"model '{name}' is still loading")
        return ORJSONResponse(_metadata(pool.spec))

    async def model_ready(request: Request) -> Response:
        name = request.path_params["model"]
        pool = gateway.pools.get(name)
        if pool is None:
            return error(404, f"model '{name}' is not served here")
        return ORJSONResponse(
            {"name": name, "ready": pool.ready}, status_code=200 if pool.ready else 503
        )

    async def openai_models(request: Request) -> Response:
        now = int(time.time())
        data = [
            {"id": name, "object": "model", "created": now, "owned_by": "dlproxy"}
            for name in gateway.pools
        ]
        return ORJSONResponse({"object": "list", "data": data})

    async def admin_scale(request: Request) -> Response:
        """``{"instances": n}``: add instances (they take traffic once ready) or drain some."""
        name = request.path_params["model"]
        pool = gateway.pools.get(name)
        if pool is None:
            return error(404, f"model '{name}' is not served here")
        try:
            wanted = orjson.loads(await request.body())["instances"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return error(400, 'send a JSON object like {"instances": 2}')
        if not isinstance(wanted, int) or isinstance(wanted, bool) or not 0 <= wanted <= 64:
            return error(400, f"'instances' must be an integer from 0 to 64, got {wanted!r}")
        await pool.scale_to(wanted)
        return ORJSONResponse({"model": name, "instances": len(pool.instances)})

    async def admin_instances(request: Request) -> Response:
        rows = []
        for pool in gateway.pools.values():
            for instance in pool.instances:
                rows.append(
                    {
                        "id": instance.id,
                        "model": pool.name,
                        "reference": instance.reference,
                        "state": instance.state,
                        "pid": instance.pid,
                        "node": getattr(instance, "node", None),  # Ray actors: the cluster node
                        "threads": instance.threads,
                        "weight": instance.weight,
                        "inflight": instance.batcher.inflight,
                        "queue_depth": instance.batcher.queued,
                        "latency_ewma_ms": round(instance.latency_ewma * 1000, 3),
                        "batches": instance.batcher.statistics().batches,
                        "items": instance.batcher.statistics().items,
                        # What batching/policy.py allows now (moves under --batching adaptive).
                        "batch_limit": instance.batcher.policy.max_batch,
                        "service_time_ms": round(instance.load.service_time * 1000, 3),
                        "cpu_percent": instance.load.cpu_percent,
                        "rss_bytes": instance.load.rss_bytes,
                    }
                )
        return ORJSONResponse(rows)

    registry = registry_for(gateway, metrics)

    async def prometheus(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def stats_json(request: Request) -> Response:
        # gateway_pid: which of several gateways (--gateways N) answered.
        return ORJSONResponse({**stats(gateway, metrics), "gateway_pid": os.getpid()})

    document = orjson.dumps(
        openapi.document(list(gateway.pools), auth.keys_required, auth.admin_token_set)
    )

    async def openapi_json(request: Request) -> Response:
        return Response(document, media_type="application/json")

    # Self-contained (inline script and style, no external URL); the policy keeps it that way.
    page = (files("dlproxy.http") / "dashboard" / "index.html").read_bytes()
    page_headers = {
        "Cache-Control": "no-cache",
        "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; "
        "style-src 'unsafe-inline'; connect-src 'self'",
    }

    async def dashboard(request: Request) -> Response:
        return Response(page, media_type="text/html", headers=page_headers)

    async def not_found(request: Request, exc: Exception) -> Response:
        return error(404, f"no route {request.method} {request.url.path}")

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        response = error(405, f"method {request.method} is not allowed on {request.url.path}")
        response.headers.update(getattr(exc, "headers", None) or {})  # Allow (RFC 9110)
        return response

    async def post_only(request: Request) -> Response:
        raise AssertionError("InferenceApp answers every POST to the inference routes")

    routes = [
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        Route("/v2", server_metadata),
        Route("/v2/models/{model}", model_metadata),
        Route("/v2/models/{model}/versions/{version}", model_metadata),
        Route("/v2/models/{model}/ready", model_ready),
        Route("/v2/models/{model}/versions/{version}/ready", model_ready),
        Route("/v1/models", openai_models),
        Route("/admin/instances", admin_instances),
        Route("/admin/models/{model}/scale", admin_scale, methods=["POST"]),
        Route("/metrics", prometheus),
        Route("/stats", stats_json),
        Route("/dashboard", dashboard),
        Route("/openapi.json", openapi_json),
        # POST never reaches these (InferenceApp takes it); listed so other methods get 405.
        Route("/v1/embeddings", post_only, methods=["POST"]),
        Route("/v2/models/{model}/infer", post_only, methods=["POST"]),
        Route("/v2/models/{model}/versions/{version}/infer", post_only, methods=["POST"]),
    ]
    return Starlette(routes=routes, exception_handlers={404: not_found, 405: method_not_allowed})
