"""Every route the server answers, in one table.

Starlette's routes (``routes.build_starlette``), the plain-ASGI hot path (``InferenceApp``), the
access class auth checks (``auth.py``) and the OpenAPI document (``openapi.py``) are all read from
``ENDPOINTS``, so a route added here exists everywhere at once and nowhere else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum


class Access(Enum):
    """What a route needs (see ``auth.py``)."""

    OPEN = "open"
    KEY = "key"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One route. ``protocol`` names the codec of an inference route (answered on the hot path);
    ``name`` is its handler in ``build_starlette`` and its operation in the OpenAPI document."""

    path: str
    name: str
    method: str = "GET"
    access: Access = Access.KEY
    protocol: str | None = None
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.path)
        object.__setattr__(self, "pattern", re.compile(f"{regex}$"))

    @property
    def versioned(self) -> bool:
        return "{version}" in self.path


def _versions(
    path: str,
    name: str,
    method: str = "GET",
    access: Access = Access.KEY,
    protocol: str | None = None,
) -> tuple[Endpoint, Endpoint]:
    """A model route and its ``/versions/{version}`` twin."""
    head, _, tail = path.partition("{model}")
    twin = f"{head}{{model}}/versions/{{version}}{tail}"
    return (
        Endpoint(path, name, method, access, protocol),
        Endpoint(twin, name, method, access, protocol),
    )


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("/v2/health/live", "live", access=Access.OPEN),
    Endpoint("/v2/health/ready", "ready", access=Access.OPEN),
    Endpoint("/v2", "server_metadata"),
    *_versions("/v2/models/{model}", "model_metadata"),
    *_versions("/v2/models/{model}/ready", "model_ready", access=Access.OPEN),
    *_versions("/v2/models/{model}/infer", "infer", method="POST", protocol="kserve"),
    Endpoint("/v1/embeddings", "embeddings", method="POST", protocol="openai"),
    Endpoint("/v1/models", "openai_models"),
    Endpoint("/v2/repository/index", "repository_index", method="POST", access=Access.ADMIN),
    Endpoint(
        "/v2/repository/models/{model}/load", "repository_load", method="POST", access=Access.ADMIN
    ),
    Endpoint(
        "/v2/repository/models/{model}/unload",
        "repository_unload",
        method="POST",
        access=Access.ADMIN,
    ),
    Endpoint("/admin/instances", "admin_instances", access=Access.ADMIN),
    Endpoint("/admin/models/{model}/scale", "admin_scale", method="POST", access=Access.ADMIN),
    Endpoint("/metrics", "prometheus", access=Access.OPEN),
    Endpoint("/stats", "stats", access=Access.OPEN),
    Endpoint("/dashboard", "dashboard", access=Access.OPEN),
    Endpoint("/openapi.json", "openapi", access=Access.OPEN),
)

_EXACT = {e.path: e for e in ENDPOINTS if "{" not in e.path}
_PATTERNS = [e for e in ENDPOINTS if "{" in e.path]
_HOT_EXACT = {e.path: e for e in _EXACT.values() if e.protocol is not None}
_HOT_PATTERNS = [e for e in _PATTERNS if e.protocol is not None]


def find(path: str) -> Endpoint | None:
    """The endpoint of an (ASGI, percent-decoded) path, if any."""
    endpoint = _EXACT.get(path)
    if endpoint is not None:
        return endpoint
    return next((e for e in _PATTERNS if e.pattern.match(path)), None)


def hot(path: str) -> tuple[Endpoint, str, str] | None:
    """The inference endpoint of a POST path, the model it names ("" when the body does) and the
    version ("" for the model's default)."""
    endpoint = _HOT_EXACT.get(path)
    if endpoint is not None:
        return endpoint, "", ""
    for endpoint in _HOT_PATTERNS:
        match = endpoint.pattern.match(path)
        if match is not None:
            return endpoint, match["model"], match.groupdict().get("version") or ""
    return None


def access_for(path: str) -> Access:
    """The access class of a path. Paths that are no route: under ``/admin`` admin, under
    ``/dashboard`` open, else an API key (a client without a key learns nothing of routes)."""
    endpoint = find(path)
    if endpoint is not None:
        return endpoint.access
    if path == "/admin" or path.startswith(("/admin/", "/v2/repository/")):
        return Access.ADMIN
    if path.startswith("/dashboard/"):
        return Access.OPEN
    return Access.KEY


OPERATOR_PATHS = ("/metrics", "/stats", "/dashboard")


def operator_route(path: str) -> bool:
    """Whether a path is for operators (admin and repository routes, metrics, stats, the
    dashboard): what ``--admin-port`` moves off the main port."""
    return (
        access_for(path) is Access.ADMIN or path in OPERATOR_PATHS or path.startswith("/dashboard/")
    )
