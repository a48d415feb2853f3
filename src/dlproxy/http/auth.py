"""Credentials: API keys for inference and metadata, an admin token for ``/admin``.

Which routes need what:

- open: ``/v2/health/live``, ``/v2/health/ready``, ``/v2/models/{m}[/versions/{v}]/ready``
  (the Open Inference Protocol's health API, for probes), ``/metrics``, ``/stats``, ``/dashboard``
  and ``/openapi.json``; with API keys and ``--protect-operator-routes``, all but the first two
  need a key too (they tell model names and traffic);
- an API key, when any is configured: every other route (inference, ``/v2``, model metadata,
  ``/v1/models``; an unknown path too, so a client without a key learns nothing about routes);
  the admin token also opens these;
- the admin token: ``/admin/*`` and the repository routes. With none configured they are closed
  (403), unless the operator opts into trusting this machine (``--admin-loopback``): then they
  answer clients on loopback (127.0.0.0/8, ::1). Not the default, because behind a same-host
  proxy or a service-mesh sidecar every caller is loopback. With ``--forwarded-allow-ips`` the
  client is the one a trusted proxy names, so a forwarded outsider is not loopback.

A client sends its key as ``Authorization: Bearer <key>`` (what the ``openai`` client sends), or
as ``X-Api-Key: <key>`` or ``api-key: <key>`` (what API gateways and Azure-style clients send).
Missing or unknown credentials get 401 with ``WWW-Authenticate: Bearer`` (after 30 failures from
one address, 429 until it slows to two a second, so keys cannot be guessed at speed); valid credentials that do
not open the route (an API key on an admin route, or any admin call when there is no admin token
and loopback is not trusted, or the client is not on it) get 403.

The presented credential is hashed (SHA-256) and compared with ``hmac.compare_digest`` to the
digest of every configured key, without stopping at a match, so response times reveal neither
which key matched nor a key's length. Keys never appear in messages or logs.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from dlproxy.errors import DlproxyError, Forbidden, RateLimited, Unauthorized
from dlproxy.http import protocols
from dlproxy.http.errors import describe
from dlproxy.http.ratelimit import RateLimiter
from dlproxy.http.table import Access, access_for

if TYPE_CHECKING:
    from dlproxy.settings import Settings


PROBES = frozenset({"/v2/health/live", "/v2/health/ready"})
"""Open even with ``--protect-operator-routes``: what liveness and readiness probes call."""

FAILED_BURST = 30
"""Failed authentications an address may make at once (a client with a wrong key, retrying)."""
FAILED_RATE = 2.0
"""Failed authentications per second an address may make after that: guessing keys is hopeless."""


def credential(headers: Mapping[bytes, bytes]) -> bytes | None:
    """The credential a request presents: a Bearer token, else X-Api-Key, else api-key."""
    value = headers.get(b"authorization")
    if value is not None:
        scheme, _, token = value.strip().partition(b" ")
        token = token.strip()
        if scheme.lower() == b"bearer" and token:
            return token
    value = headers.get(b"x-api-key") or headers.get(b"api-key")
    if value is not None:
        value = value.strip()
    return value or None


def _digest(secret: bytes) -> bytes:
    return hashlib.sha256(secret).digest()


def _matches(digest: bytes, known: tuple[bytes, ...]) -> bool:
    """Compare with every known digest: no early exit that would tell which one matched."""
    found = False
    for key in known:
        found |= hmac.compare_digest(digest, key)
    return found


def is_loopback(host: str | None) -> bool:
    """Whether a client address is on this machine (IPv4-mapped IPv6 included)."""
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


class Authenticator:
    """Checks a request's credentials against the configured API keys and admin token."""

    def __init__(
        self,
        api_keys: Iterable[str] = (),
        admin_token: str | None = None,
        trust_loopback: bool = False,
        failures: RateLimiter | None = None,
        protect_open: bool = False,
    ) -> None:
        keys = list(api_keys)
        for index, key in enumerate(keys, 1):
            _check_secret(key, f"API key number {index}")
        if admin_token is not None:
            _check_secret(admin_token, "the admin token")
        self._admin = _digest(admin_token.encode()) if admin_token else None
        self._admin_only = (self._admin,) if self._admin else ()
        self._keys = tuple(_digest(key.encode()) for key in keys)
        self._keys_or_admin = self._keys + self._admin_only
        self.keys_required = bool(self._keys)
        """Whether inference and metadata routes need a key (checked before anything else)."""
        self.admin_token_set = self._admin is not None
        self.trust_loopback = trust_loopback
        self.protect_open = protect_open and self.keys_required  # metrics & co. need a key too
        # Failed attempts per client address: a burst, then a slow rate (429 beyond).
        self._failures = failures or RateLimiter(rate=FAILED_RATE, burst=FAILED_BURST)

    def check_key(self, headers: Mapping[bytes, bytes], client_host: str | None = None) -> bytes:
        """The digest of the API key (or admin token) the request presents, which identifies
        the client (rate limits key on it); raise Unauthorized if there is none, or RateLimited
        once the client's address has failed too often."""
        presented = credential(headers)
        if presented is None:
            self._refuse(
                Unauthorized(
                    "this route needs an API key: send the header 'Authorization: Bearer <key>'"
                ),
                client_host,
            )
        digest = _digest(presented)
        if not _matches(digest, self._keys_or_admin):
            self._refuse(Unauthorized("the API key is not valid"), client_host)
        return digest

    def _refuse(self, error: DlproxyError, client_host: str | None) -> NoReturn:
        """Raise ``error``, counted as a failed attempt of the address; past its limit, 429."""
        try:
            self._failures.check(client_host or "")
        except RateLimited as limited:
            raise RateLimited(
                "too many failed authentications from this address; try again in "
                f"{math.ceil(limited.retry_after)} s",
                retry_after=limited.retry_after,
            ) from None
        raise error

    def check_admin(self, headers: Mapping[bytes, bytes], client_host: str | None) -> None:
        """Raise unless the request may use admin routes: the admin token, or (only when the
        operator trusts this machine and no token is set) a client on loopback."""
        if self._admin is None:
            if self.trust_loopback and is_loopback(client_host):
                return
            if self.trust_loopback:
                raise Forbidden(
                    "admin routes answer only clients on this machine when no admin token is "
                    "configured (set --admin-token or DLPROXY_ADMIN_TOKEN)"
                )
            raise Forbidden(
                "admin routes need the admin token: set --admin-token (or DLPROXY_ADMIN_TOKEN); "
                "--admin-loopback trusts every caller on this machine instead"
            )
        presented = credential(headers)
        if presented is None:
            raise Unauthorized(
                "admin routes need the admin token: send the header 'Authorization: Bearer <token>'"
            )
        digest = _digest(presented)
        if _matches(digest, self._admin_only):
            return
        if _matches(digest, self._keys):
            raise Forbidden("an API key does not open admin routes; send the admin token")
        self._refuse(Unauthorized("the admin token is not valid"), client_host)

    def check(self, path: str, headers: Mapping[bytes, bytes], client_host: str | None) -> None:
        """Check a request to any route by its access class."""
        access = access_for(path)
        if access is Access.OPEN and self.protect_open and path not in PROBES:
            access = Access.KEY
        if access is Access.ADMIN:
            self.check_admin(headers, client_host)
        elif access is Access.KEY and self.keys_required:
            self.check_key(headers, client_host)


def _check_secret(secret: str, what: str) -> None:
    """Refuse secrets no client could send in a header; the message never holds the secret."""
    if (
        not secret
        or not secret.isascii()
        or not secret.isprintable()
        or any(c.isspace() for c in secret)
    ):
        raise ValueError(f"{what} must be non-empty printable ASCII without spaces")


def read_keys_file(path: Path) -> list[str]:
    """API keys from a file, one per line; blank lines and ``#`` comments are skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
        raise ValueError(f"cannot read the API keys file {path}: {reason}") from None
    keys = [line.strip() for line in text.splitlines()]
    keys = [key for key in keys if key and not key.startswith("#")]
    if not keys:
        raise ValueError(f"the API keys file {path} holds no keys")
    return keys


def build_authenticator(settings: Settings) -> Authenticator:
    """The authenticator the settings ask for: keys from ``api_keys`` and ``api_keys_file``."""
    keys = [key.get_secret_value() for key in settings.api_keys or ()]
    if settings.api_keys_file is not None:
        keys += read_keys_file(settings.api_keys_file)
    token = settings.admin_token.get_secret_value() if settings.admin_token else None
    return Authenticator(
        keys,
        token,
        trust_loopback=settings.admin_loopback,
        protect_open=settings.protect_operator_routes,
    )


class AuthGate:
    """ASGI wrapper that checks credentials before the non-inference routes run.

    The inference routes call ``Authenticator.check_key`` themselves (one header lookup and one
    compare on the hot path); this gate covers everything else, where a request is rare.
    """

    def __init__(self, app: ASGIApp, auth: Authenticator) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            client = scope.get("client")
            try:
                self.auth.check(path, dict(scope["headers"]), client[0] if client else None)
            except DlproxyError as exc:
                await _deny(exc, path, scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _deny(exc: DlproxyError, path: str, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer a refused request in its protocol's error shape (OpenAI under /v1, else KServe)."""
    status, message, extra = describe(exc)
    body = protocols.codec_for(path).error(status, message)
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in extra}
    response = Response(body, status, headers, media_type="application/json")
    await response(scope, receive, send)
