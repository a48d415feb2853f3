"""API keys and the admin token: which routes need what, status codes, and secrets kept out of
every message. Pure: no server, no workers (ASGI apps are called in-process)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from dlproxy.cli import build_parser, settings_from
from dlproxy.errors import DlproxyError, Forbidden, Unauthorized
from dlproxy.gateway import Gateway, Limits
from dlproxy.http import openapi
from dlproxy.http.auth import (
    FAILED_BURST,
    Access,
    Authenticator,
    AuthGate,
    access_for,
    build_authenticator,
    credential,
    is_loopback,
    read_keys_file,
)
from dlproxy.http.errors import describe
from dlproxy.http.ratelimit import RateLimiter
from dlproxy.http.routes import InferenceApp
from dlproxy.settings import Settings

KEY = "key-3f9a1c0d"
OTHER_KEY = "key-77aa02be"
TOKEN = "admin-5e1b9c44"
SECRETS = (KEY, OTHER_KEY, TOKEN)


def bearer(secret: str) -> dict[bytes, bytes]:
    return {b"authorization": f"Bearer {secret}".encode()}


def message_of(check: Callable[[], None]) -> DlproxyError:
    with pytest.raises(DlproxyError) as caught:
        check()
    for secret in SECRETS:
        assert secret not in str(caught.value)
    return caught.value


# --- routes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "access"),
    [
        ("/v2/health/live", Access.OPEN),
        ("/v2/health/ready", Access.OPEN),
        ("/v2/models/m/ready", Access.OPEN),
        ("/v2/models/m/versions/1/ready", Access.OPEN),
        ("/metrics", Access.OPEN),
        ("/stats", Access.OPEN),
        ("/dashboard", Access.OPEN),
        ("/openapi.json", Access.OPEN),
        ("/v2/models/m/infer", Access.KEY),
        ("/v2/models/m/versions/1/infer", Access.KEY),
        ("/v1/embeddings", Access.KEY),
        ("/v2", Access.KEY),
        ("/v2/models/m", Access.KEY),
        ("/v1/models", Access.KEY),
        ("/no/such/route", Access.KEY),
        ("/admin/instances", Access.ADMIN),
        ("/admin/models/m/scale", Access.ADMIN),
        ("/admin", Access.ADMIN),
    ],
)
def test_each_route_has_its_access_class(path: str, access: Access) -> None:
    assert access_for(path) is access


# --- credentials -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({b"authorization": b"Bearer abc"}, b"abc"),
        ({b"authorization": b"bearer   abc  "}, b"abc"),
        ({b"authorization": b"BEARER abc"}, b"abc"),
        ({b"x-api-key": b"abc"}, b"abc"),
        ({b"api-key": b" abc "}, b"abc"),
        ({b"authorization": b"Basic dTpw"}, None),
        ({b"authorization": b"Bearer "}, None),
        ({b"authorization": b"Basic dTpw", b"x-api-key": b"abc"}, b"abc"),
        ({b"x-api-key": b""}, None),
        ({}, None),
    ],
)
def test_a_credential_is_a_bearer_token_or_an_api_key_header(
    headers: dict[bytes, bytes], expected: bytes | None
) -> None:
    assert credential(headers) == expected


def test_without_keys_nothing_is_required() -> None:
    auth = Authenticator()
    assert not auth.keys_required
    auth.check("/v2/models/m/infer", {}, "203.0.113.9")
    auth.check("/v1/models", {}, "203.0.113.9")


def test_an_api_key_opens_inference_and_metadata() -> None:
    auth = Authenticator([KEY, OTHER_KEY])
    assert auth.keys_required
    auth.check_key(bearer(KEY))
    auth.check_key({b"x-api-key": OTHER_KEY.encode()})
    auth.check("/v2/models/m/infer", bearer(OTHER_KEY), None)
    auth.check("/v2/health/ready", {}, None)  # open routes need nothing


def test_a_missing_or_wrong_key_is_401_and_never_echoed() -> None:
    auth = Authenticator([KEY], TOKEN)
    missing = message_of(lambda: auth.check_key({}))
    assert isinstance(missing, Unauthorized) and "Authorization: Bearer" in str(missing)
    wrong = message_of(lambda: auth.check_key(bearer(KEY + "x")))
    assert isinstance(wrong, Unauthorized)
    prefix = message_of(lambda: auth.check_key(bearer(KEY[:-1])))
    assert isinstance(prefix, Unauthorized)


def test_the_admin_token_also_opens_inference() -> None:
    Authenticator([KEY], TOKEN).check_key(bearer(TOKEN))


def test_admin_routes_need_the_token() -> None:
    auth = Authenticator([KEY], TOKEN)
    auth.check("/admin/instances", bearer(TOKEN), "203.0.113.9")
    assert isinstance(message_of(lambda: auth.check_admin({}, "127.0.0.1")), Unauthorized)
    assert isinstance(message_of(lambda: auth.check_admin(bearer("nope"), None)), Unauthorized)
    assert isinstance(message_of(lambda: auth.check_admin(bearer(KEY), None)), Forbidden)


def test_without_a_token_admin_routes_are_closed_even_to_loopback() -> None:
    auth = Authenticator([KEY])
    for host in ("127.0.0.1", "::1", "203.0.113.9", None):
        refused = message_of(lambda h=host: auth.check("/admin/instances", {}, h))
        assert isinstance(refused, Forbidden) and "--admin-loopback" in str(refused)
        assert isinstance(
            message_of(lambda h=host: auth.check("/v2/repository/index", {}, h)), Forbidden
        )
    auth.check("/metrics", {}, "203.0.113.9")  # open routes stay open


def test_trusting_loopback_opens_admin_routes_to_this_machine_only() -> None:
    auth = Authenticator([KEY], trust_loopback=True)
    for host in ("127.0.0.1", "127.8.0.2", "::1", "::ffff:127.0.0.1"):
        auth.check("/admin/instances", {}, host)
    for host in ("203.0.113.9", "::ffff:10.0.0.1", "testclient", None):
        assert isinstance(message_of(lambda h=host: auth.check_admin(bearer(KEY), h)), Forbidden)


def test_loopback_addresses() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("") and not is_loopback("localhost")


@pytest.mark.parametrize("bad", ["", "two words", "tab\tkey", "naïve", "line\nbreak"])
def test_unusable_secrets_are_refused_without_being_shown(bad: str) -> None:
    with pytest.raises(ValueError) as caught:
        Authenticator([KEY, bad])
    assert "number 2" in str(caught.value)
    if bad:
        assert bad not in str(caught.value)
    with pytest.raises(ValueError, match="admin token"):
        Authenticator(admin_token=bad)


# --- where keys come from ----------------------------------------------------------------------


def test_keys_file_skips_blank_lines_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"# team a\n{KEY}\n\n  {OTHER_KEY}  \n")
    assert read_keys_file(path) == [KEY, OTHER_KEY]


def test_keys_file_errors_name_the_file_not_its_content(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read the API keys file"):
        read_keys_file(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.write_text("# nothing yet\n")
    with pytest.raises(ValueError, match="holds no keys"):
        read_keys_file(empty)


def test_keys_come_from_flags_a_file_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "keys"
    path.write_text(OTHER_KEY + "\n")
    args = build_parser().parse_args(
        ["serve", "--api-key", KEY, "--api-keys-file", str(path), "--admin-token", TOKEN]
    )
    settings = settings_from(args)
    auth = build_authenticator(settings)
    auth.check_key(bearer(KEY))
    auth.check_key(bearer(OTHER_KEY))
    auth.check_admin(bearer(TOKEN), None)
    for secret in SECRETS:  # a settings object printed in a log shows no secret
        assert secret not in repr(settings) and secret not in str(settings)

    monkeypatch.setenv("DLPROXY_API_KEYS", f"{KEY}, {OTHER_KEY},")
    monkeypatch.setenv("DLPROXY_ADMIN_TOKEN", TOKEN)
    from_env = Settings()
    assert from_env.api_keys == [SecretStr(KEY), SecretStr(OTHER_KEY)]
    assert build_authenticator(from_env).admin_token_set


def test_unauthorized_is_401_with_a_challenge_and_forbidden_is_403() -> None:
    status, _, headers = describe(Unauthorized("no"))
    assert status == 401 and (b"www-authenticate", b'Bearer realm="dlproxy"') in headers
    assert describe(Forbidden("no"))[0] == 403


# --- through the ASGI app ----------------------------------------------------------------------


async def call(
    app: Callable[..., Awaitable[None]],
    method: str,
    path: str,
    client: tuple[str, int] = ("203.0.113.9", 40000),
    **kwargs: Any,
) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, client=client)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        return await http.request(method, path, **kwargs)


def inference_app(auth: Authenticator) -> InferenceApp:
    return InferenceApp(Gateway([], Limits()), 1 << 20, auth=auth)


GOOD = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hi"]}]}


async def test_the_app_refuses_before_decoding_and_admits_with_a_key() -> None:
    app = inference_app(Authenticator([KEY], TOKEN))
    refused = await call(app, "POST", "/v2/models/m/infer", content=b"not json")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert isinstance(refused.json()["error"], str)
    openai = await call(app, "POST", "/v1/embeddings", headers={"Authorization": "Bearer x"})
    assert openai.status_code == 401
    assert openai.json()["error"]["type"] == "authentication_error"
    admitted = await call(
        app, "POST", "/v2/models/m/infer", json=GOOD, headers={"Authorization": f"Bearer {KEY}"}
    )
    assert admitted.status_code == 404  # past the check: no model 'm' is served


async def test_the_gate_covers_metadata_and_admin_and_leaves_health_open() -> None:
    app = inference_app(Authenticator([KEY], TOKEN))
    assert (await call(app, "GET", "/v2/health/live")).status_code == 200
    assert (await call(app, "GET", "/openapi.json")).status_code == 200
    assert (await call(app, "GET", "/metrics")).status_code == 200
    models = await call(app, "GET", "/v1/models")
    assert models.status_code == 401 and models.json()["error"]["code"] == "invalid_api_key"
    assert (await call(app, "GET", "/v2", headers={"X-Api-Key": KEY})).status_code == 200
    assert (await call(app, "GET", "/no/such/route")).status_code == 401
    key = {"Authorization": f"Bearer {KEY}"}
    admin = await call(app, "GET", "/admin/instances", headers=key)
    assert admin.status_code == 403 and "admin token" in admin.json()["error"]
    token = {"Authorization": f"Bearer {TOKEN}"}
    assert (await call(app, "GET", "/admin/instances", headers=token)).status_code == 200


async def test_without_a_token_admin_is_closed_unless_loopback_is_trusted() -> None:
    closed = inference_app(Authenticator())
    local = ("127.0.0.1", 40000)
    assert (await call(closed, "GET", "/admin/instances", client=local)).status_code == 403
    trusting = inference_app(Authenticator(trust_loopback=True))
    assert (await call(trusting, "GET", "/admin/instances")).status_code == 403
    assert (await call(trusting, "GET", "/admin/instances", client=local)).status_code == 200


async def test_rate_limits_key_on_the_verified_key_not_on_what_a_client_makes_up() -> None:
    app = InferenceApp(
        Gateway([], Limits()), 1 << 20, limiter=RateLimiter(1, 2), auth=Authenticator([KEY])
    )
    statuses = []
    for nonce in range(4):  # a fresh Authorization value each time, next to the valid key
        headers = {"X-Api-Key": KEY, "Authorization": f"Basic {nonce}"}
        response = await call(app, "POST", "/v2/models/m/infer", json=GOOD, headers=headers)
        statuses.append(response.status_code)
    assert statuses == [404, 404, 429, 429]  # one bucket: the key's (404: past the limit)
    other = await call(
        app, "POST", "/v2/models/m/infer", json=GOOD, headers={"X-Api-Key": OTHER_KEY}
    )
    assert other.status_code == 401  # not a key: no bucket of its own either


async def test_without_keys_the_limit_keys_on_the_client_address() -> None:
    app = InferenceApp(Gateway([], Limits()), 1 << 20, limiter=RateLimiter(1, 2))
    statuses = [
        (
            await call(
                app, "POST", "/v2/models/m/infer", json=GOOD, headers={"Authorization": str(n)}
            )
        ).status_code
        for n in range(3)
    ]
    assert statuses == [404, 404, 429]
    elsewhere = await call(app, "POST", "/v2/models/m/infer", json=GOOD, client=("198.51.100.7", 1))
    assert elsewhere.status_code == 404


async def test_failed_authentications_are_limited_per_address() -> None:
    app = inference_app(Authenticator([KEY]))
    wrong = {"Authorization": "Bearer guess"}
    statuses = [
        (await call(app, "POST", "/v2/models/m/infer", json=GOOD, headers=wrong)).status_code
        for _ in range(FAILED_BURST + 2)
    ]
    assert statuses[:FAILED_BURST] == [401] * FAILED_BURST and statuses[FAILED_BURST:] == [429] * 2
    limited = await call(app, "POST", "/v2/models/m/infer", json=GOOD, headers=wrong)
    assert "failed authentications" in limited.json()["error"]
    right = {"Authorization": f"Bearer {KEY}"}
    admitted = await call(app, "POST", "/v2/models/m/infer", json=GOOD, headers=right)
    assert admitted.status_code == 404  # a valid key is never held back by the guesses
    elsewhere = await call(
        app, "POST", "/v2/models/m/infer", json=GOOD, headers=wrong, client=("198.51.100.7", 1)
    )
    assert elsewhere.status_code == 401


async def test_other_methods_on_inference_routes_get_405_with_allow() -> None:
    app = inference_app(Authenticator())
    response = await call(app, "GET", "/v2/models/m/infer")
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    allow = (await call(app, "DELETE", "/v2/health/live")).headers["allow"]
    assert set(allow.split(", ")) == {"GET", "HEAD"}


# --- the OpenAPI document ----------------------------------------------------------------------


def test_the_document_lists_every_route_and_the_credentials_it_needs() -> None:
    app = inference_app(Authenticator([KEY], TOKEN))
    gate = app.other
    assert isinstance(gate, AuthGate)
    routes = {route.path for route in gate.app.routes}  # type: ignore[attr-defined]
    document = openapi.document(["m"], keys_required=True, admin_token=True)
    assert set(document["paths"]) == routes
    schemes = document["components"]["securitySchemes"]
    for path, item in document["paths"].items():
        access = access_for(path.replace("{model}", "m").replace("{version}", "1"))
        for operation in item.values():
            names = {name for option in operation["security"] for name in option}
            assert names <= schemes.keys()
            assert bool(names) == (access is not Access.OPEN), path
    open_document = openapi.document(["m"])  # no keys, no token: nothing to send
    assert all(
        operation["security"] == []
        for item in open_document["paths"].values()
        for operation in item.values()
    )


async def test_operator_routes_can_be_closed_to_clients_without_a_key() -> None:
    app = inference_app(Authenticator([KEY], TOKEN, protect_open=True))
    for path in ("/metrics", "/stats", "/openapi.json", "/v2/models/m/ready"):
        assert (await call(app, "GET", path)).status_code == 401, path
    for path in ("/metrics", "/stats", "/openapi.json"):
        response = await call(app, "GET", path, headers={"X-Api-Key": KEY})
        assert response.status_code == 200, path
    for probe in ("/v2/health/live", "/v2/health/ready"):
        assert (await call(app, "GET", probe)).status_code != 401, probe
    open_app = inference_app(Authenticator([KEY], TOKEN))  # the default: open, as before
    assert (await call(open_app, "GET", "/metrics")).status_code == 200
