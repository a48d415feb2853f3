"""HTTP routes, as listed in ``http/table.py``. The inference routes are plain ASGI (the hot
path); the rest is Starlette.

Inference: ``POST /v2/models/{m}[/versions/{v}]/infer`` (KServe v2 JSON and binary tensors) and
``POST /v1/embeddings`` (OpenAI). ``InferenceApp._infer`` reads a request in four steps (admit,
decode with the route's codec, ``Gateway.infer``, encode) and answers it exactly once; every
error is mapped once, in ``http/errors.py``. Other routes answer with ``schemas`` types.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import Sequence
from functools import partial
from importlib.resources import files
from typing import Any, Protocol

import msgspec
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from dlproxy import kserve
from dlproxy.errors import BadRequest, ModelNotFound, PayloadTooLarge
from dlproxy.gateway import Gateway
from dlproxy.http import openapi, schemas, table
from dlproxy.http.auth import Authenticator, AuthGate
from dlproxy.http.codecs import int_header
from dlproxy.http.errors import describe
from dlproxy.http.protocols import CODECS, JSON, Codec, codec_for
from dlproxy.http.ratelimit import RateLimiter
from dlproxy.logging import access
from dlproxy.metrics import RequestMetrics, registry_for, stats
from dlproxy.types import InferenceRequest, InferenceResponse
from dlproxy.version import __version__

REJECTIONS = {413: "too_large", 429: "rate_limited", 503: "overloaded", 504: "deadline"}
_ids = itertools.count(1)
_id_prefix = os.urandom(4).hex()


MAX_PRIORITY = 9  # X-Priority / the "priority" parameter: 0 (the default) to 9, 9 served first
MAX_TIMEOUT_MS = 86_400_000  # a deadline further away is no deadline, and would not fit a float


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
        max_timeout_ms: float = MAX_TIMEOUT_MS,
        access_log: bool = False,
        metrics: RequestMetrics | None = None,
        auth: Authenticator | None = None,
        repository: RepositoryControl | None = None,
    ) -> None:
        self.gateway = gateway
        self.max_body_bytes = max_body_bytes
        self.default_timeout_ms = default_timeout_ms
        self.max_timeout_ms = max_timeout_ms  # a longer deadline asked for is cut to this
        self._check = gateway.check_input  # bound once: every request's inputs go through it
        self.metrics = metrics or RequestMetrics()
        self.limiter = limiter
        self.access_log = access_log
        self.auth = auth or Authenticator()
        starlette = build_starlette(gateway, self.metrics, self.auth, repository)
        self.other = AuthGate(starlette, self.auth)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            root: str = scope.get("root_path", "")
            if root and path.startswith(root):  # mounted under a prefix (another app's route)
                path = path[len(root) :]
            found = table.hot(path)
            if found is not None:
                endpoint, model, version = found
                codec = CODECS[endpoint.protocol or ""]
                await self._infer(scope, receive, send, codec, model, version)
                return
        await self.other(scope, receive, send)

    async def _infer(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        codec: Codec,
        model: str,
        version: str = "",
    ) -> None:
        """One inference request, answered exactly once: admit, read, decode, infer, encode."""
        started = time.perf_counter()
        headers = dict(scope["headers"])
        request_id = (headers.get(b"x-request-id") or b"").decode("latin-1") or _new_id()
        request: InferenceRequest | None = None
        body: bytes | None = None
        try:
            client = self._admit(scope, headers)
            self.gateway.refuse_early(model, version, client)
            body = await self._read_body(headers, receive)
            request = self._request(codec, body, model, headers, request_id, version)
            request.client = client
            response = await self.gateway.infer(request)
            payload, extra, content_type = codec.encode(response, request)
            extra += [
                (b"x-dlproxy-instance", response.instance.encode()),
                (b"x-dlproxy-cache", response.cache.encode()),
            ]
            if response.load_wait:
                extra.append((b"x-dlproxy-load-wait-ms", b"%.1f" % (response.load_wait * 1000)))
            await _respond(send, 200, payload, request_id, extra, content_type)
            self._record(codec, request.model, 200, started, request_id, response)
        except Exception as exc:
            status, message, extra = describe(exc, request_id)
            label = self._model_label(request.model if request is not None else model)
            self._record(codec, label, status, started, request_id, None, version)
            if body is None and not isinstance(exc, BadRequest):  # refused before reading it
                await _linger(headers, receive, 4 * self.max_body_bytes)
            param = getattr(exc, "param", None)
            await _respond(send, status, codec.error(status, message, param), request_id, extra)

    def _admit(self, scope: Scope, headers: dict[bytes, bytes]) -> str:
        """Who the client is: ``sha256:`` and 16 hex digits of its verified API key (when keys
        are configured), else its address, never what a client may make up. Its rate limit and
        its fair share both key on that."""
        address = str((scope.get("client") or ("", 0))[0])
        client = address
        if self.auth.keys_required:  # before the rate limit: it keys buckets by credential
            client = "sha256:" + self.auth.check_key(headers, address).hex()[:16]
        if self.limiter is not None:
            self.limiter.check(client)
        return client

    def _request(
        self,
        codec: Codec,
        body: bytes,
        model: str,
        headers: dict[bytes, bytes],
        request_id: str,
        version: str = "",
    ) -> InferenceRequest:
        """The decoded request (its inputs checked before their data is read) with what the
        headers add: id, session key, deadline."""
        check = self._check if not version else partial(self.gateway.check_input, version=version)
        request = codec.decode(body, model, headers, check)
        request.version = version
        if not request.id:  # a KServe body may carry its own id; it is echoed in the body
            request.id = request_id
        priority = headers.get(b"x-priority")
        level = (
            int_header(priority, "X-Priority")
            if priority is not None
            else request.parameters.get("priority", 0)
        )
        if level:
            if type(level) is not int or not 0 <= level <= MAX_PRIORITY:
                raise BadRequest(
                    f"priority must be an integer from 0 (the default) to {MAX_PRIORITY}, "
                    f"got {level!r}",
                    param="priority",
                )
            request.priority = level
        session = headers.get(b"x-session-key")
        if session:
            request.session_key = session.decode("latin-1")
        timeout = headers.get(b"x-request-timeout-ms")
        timeout_ms = (
            int_header(timeout, "X-Request-Timeout-Ms")
            if timeout is not None
            else self.default_timeout_ms
        )
        if timeout_ms is not None:
            if not 0 < timeout_ms <= MAX_TIMEOUT_MS:
                raise BadRequest(
                    f"X-Request-Timeout-Ms must be a positive number of milliseconds, at most "
                    f"{MAX_TIMEOUT_MS} (one day)"
                )
            timeout_ms = min(timeout_ms, self.max_timeout_ms)
            request.deadline = asyncio.get_running_loop().time() + timeout_ms / 1000
        return request

    def _record(
        self,
        codec: Codec,
        model: str,
        status: int,
        started: float,
        request_id: str,
        response: InferenceResponse | None,
        version: str = "",
    ) -> None:
        """Metrics, rejections and the access log line of one answer."""
        elapsed = time.perf_counter() - started
        self.metrics.record(
            model,
            self._version_label(model, response.model_version if response else version),
            codec.protocol,
            status,
            elapsed,
        )
        if status in REJECTIONS:
            self.metrics.reject(model, REJECTIONS[status])
        if self.access_log:
            instance, cache = (response.instance, response.cache) if response else ("", "")
            access(request_id, model, codec.protocol, status, elapsed, instance, cache)

    def _model_label(self, model: str) -> str:
        """Metric label for a model name: only served names, so clients cannot add series."""
        return model if model in self.gateway.pools else "unknown"

    def _version_label(self, model: str, version: str) -> str:
        """Metric label for a version: a served one of a model with versions, else ""."""
        versions = self.gateway.versions.get(model)
        return version if versions is not None and version in versions and version else ""

    async def _read_body(self, headers: dict[bytes, bytes], receive: Receive) -> bytes:
        length = headers.get(b"content-length")
        declared = int_header(length, "Content-Length")
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


LINGER_SECONDS = 5.0
"""Longest time spent discarding a refused body (see ``_linger``)."""


async def _linger(headers: dict[bytes, bytes], receive: Receive, limit: int) -> None:
    """Read and discard (up to ``limit`` bytes or ``LINGER_SECONDS``) a body refused before it
    was read, as nginx's lingering close does: a client still sending it (one that did not ask
    ``Expect: 100-continue``, such as urllib or requests) would otherwise get a connection reset
    instead of the answer."""
    if b"expect" in headers or headers.get(b"content-length", b"0") == b"0":
        return
    read = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(LINGER_SECONDS):
            while read <= limit:
                message = await receive()
                read += len(message.get("body", b""))
                if message["type"] == "http.disconnect" or not message.get("more_body", False):
                    return


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


class StructResponse(Response):
    """A JSON response of one of ``schemas``' types (or a list of them): what the document says."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return msgspec.json.encode(content)


class RepositoryControl(Protocol):
    """What the repository routes call (``lifecycle.ModelControl``), given by the app."""

    def index(self) -> Sequence[Any]: ...

    async def load(self, name: str) -> None: ...

    async def unload(self, name: str) -> None: ...


def build_starlette(
    gateway: Gateway,
    metrics: RequestMetrics,
    auth: Authenticator,
    repository: RepositoryControl | None = None,
) -> Starlette:
    """The non-hot routes: health, metadata, model lists, admin, the model repository."""

    def error(status: int, message: str) -> Response:
        return StructResponse(schemas.Error(message), status_code=status)

    async def live(request: Request) -> Response:
        return StructResponse(schemas.Live(True))

    async def ready(request: Request) -> Response:
        return StructResponse(schemas.Ready(gateway.ready), 200 if gateway.ready else 503)

    async def server_metadata(request: Request) -> Response:
        return StructResponse(
            schemas.ServerMetadata("dlproxy", __version__, ["binary_tensor_data"])
        )

    async def model_metadata(request: Request) -> Response:
        name = request.path_params["model"]
        try:
            pool = gateway.pool(name, request.path_params.get("version", ""))
        except ModelNotFound as exc:
            return error(404, str(exc))
        if pool.spec is None:
            return error(503, f"model '{name}' is still loading")
        return StructResponse(msgspec.convert(kserve.metadata_of(pool.spec), schemas.ModelMetadata))

    async def model_ready(request: Request) -> Response:
        name = request.path_params["model"]
        try:
            pool = gateway.pool(name, request.path_params.get("version", ""))
        except ModelNotFound as exc:
            return error(404, str(exc))
        return StructResponse(schemas.ModelReady(name, pool.ready), 200 if pool.ready else 503)

    async def openai_models(request: Request) -> Response:
        now = int(time.time())
        data = [schemas.ModelEntry(name, "model", now, "dlproxy") for name in gateway.pools]
        return StructResponse(schemas.ModelList("list", data))

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
        return StructResponse(schemas.Scaled(name, len(pool.instances)))

    async def admin_instances(request: Request) -> Response:
        rows = [
            schemas.Instance(
                id=instance.id,
                model=pool.name,
                version=pool.version,
                reference=instance.reference,
                state=instance.state,  # type: ignore[arg-type]
                pid=instance.pid,
                node=getattr(instance, "node", None),
                threads=instance.threads,
                weight=instance.weight,
                inflight=instance.batcher.inflight,
                queue_depth=instance.batcher.queued,
                latency_ewma_ms=round(instance.latency_ewma * 1000, 3),
                batches=instance.batcher.statistics().batches,
                items=instance.batcher.statistics().items,
                batch_limit=instance.batcher.policy.max_batch,
                service_time_ms=round(instance.load.service_time * 1000, 3),
                cpu_percent=instance.load.cpu_percent,
                rss_bytes=instance.load.rss_bytes,
            )
            for pool in gateway.all_pools()
            for instance in pool.instances
        ]
        return StructResponse(rows)

    async def repository_index(request: Request) -> Response:
        """Every model of the repository and its state (without one: the models served)."""
        try:
            wanted = msgspec.json.decode(
                await request.body() or b"{}", type=schemas.RepositoryIndexRequest
            )
        except msgspec.DecodeError as exc:
            return error(400, f"invalid repository index request: {exc}")
        if repository is None:
            rows = [
                schemas.RepositoryModel(
                    name, "READY" if pool.ready else "UNAVAILABLE", version=version
                )
                for name, versions in gateway.versions.items()
                for version, pool in versions.items()
            ]
        else:
            rows = [
                msgspec.convert(row, schemas.RepositoryModel, from_attributes=True)
                for row in repository.index()
            ]
        return StructResponse([r for r in rows if r.state == "READY" or not wanted.ready])

    async def repository_change(request: Request, load: bool) -> Response:
        name = request.path_params["model"]
        try:
            msgspec.json.decode(await request.body() or b"{}", type=schemas.RepositoryLoadRequest)
        except msgspec.DecodeError as exc:
            return error(
                400, f"invalid request: {exc} (a config or files override is not supported)"
            )
        if repository is None:
            return error(
                400, "this server has no model repository: start it with --model-repository DIR"
            )
        try:
            await (repository.load(name) if load else repository.unload(name))
        except (BadRequest, ModelNotFound) as exc:
            return error(400 if isinstance(exc, BadRequest) else 404, str(exc))
        return Response(b"", 200)

    async def repository_load(request: Request) -> Response:
        return await repository_change(request, load=True)

    async def repository_unload(request: Request) -> Response:
        return await repository_change(request, load=False)

    registry = registry_for(gateway, metrics)

    async def prometheus(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def stats_json(request: Request) -> Response:
        # gateway_pid: which of several gateways (--gateways N) answered.
        return StructResponse(schemas.Stats(**stats(gateway, metrics), gateway_pid=os.getpid()))

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

    handlers = {
        "live": live,
        "ready": ready,
        "server_metadata": server_metadata,
        "model_metadata": model_metadata,
        "model_ready": model_ready,
        "openai_models": openai_models,
        "admin_instances": admin_instances,
        "repository_index": repository_index,
        "repository_load": repository_load,
        "repository_unload": repository_unload,
        "admin_scale": admin_scale,
        "prometheus": prometheus,
        "stats": stats_json,
        "dashboard": dashboard,
        "openapi": openapi_json,
    }
    # An inference route's POST never reaches Starlette (InferenceApp takes it); it is listed
    # so that other methods get 405.
    routes = [
        Route(e.path, post_only if e.protocol else handlers[e.name], methods=[e.method])
        for e in table.ENDPOINTS
    ]
    return Starlette(routes=routes, exception_handlers={404: not_found, 405: method_not_allowed})


class PortScope:
    """One listening port's share of the routes (``--admin-port``): the operator routes only, or
    everything else; a route of the other share answers 404 as if it did not exist."""

    def __init__(self, app: ASGIApp, operator: bool) -> None:
        self.app = app
        self.operator = operator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and table.operator_route(scope["path"]) != self.operator:
            path: str = scope["path"]
            port = "the admin port" if not self.operator else "the main port"
            body = codec_for(path).error(404, f"{path} is served on {port} only")
            response = Response(body, 404, media_type="application/json")
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
