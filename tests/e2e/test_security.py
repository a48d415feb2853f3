"""API keys and the admin token on a real server, through the unmodified openai and tritonclient
packages: 401 without or with a wrong key, 403 for an API key on an admin route, 200 with the
right credential; no secret in the server log and no stack trace in any error body."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from serving import Server

KEY = "sk-dlproxy-e2e-7c1d93f0a2"
FILE_KEY = "sk-dlproxy-e2e-file-55b8e0"
TOKEN = "adm-dlproxy-e2e-9f04c6d1"
WRONG = "sk-dlproxy-e2e-wrong-31aa7c"
SECRETS = (KEY, FILE_KEY, TOKEN, WRONG)
BODY = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hello"]}]}
EMBEDDINGS = {"model": "minilm", "input": ["hello"]}

bodies: list[str] = []  # every error body seen, checked for stack traces at the end


@pytest.fixture(scope="module")
def log_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("security") / "server.log"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, log_path: Path) -> Iterator[Server]:
    keys_file = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys_file.write_text(f"# one key per line\n{FILE_KEY}\n")
    server = Server(
        *("--model", "echo", "--model", "minilm:fp32", "--instances", "1", "--threads", "1"),
        *("--api-key", KEY, "--api-keys-file", str(keys_file), "--admin-token", TOKEN),
        *("--log-level", "debug", "--access-log"),
        log=log_path,
    ).wait_ready()
    yield server
    server.stop()


def request(
    server: Server, method: str, path: str, secret: str | None, **kw: object
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    response = httpx.request(method, f"{server.url}{path}", headers=headers, timeout=30, **kw)  # type: ignore[arg-type]
    if response.status_code >= 400:
        bodies.append(response.text)
    return response


@pytest.mark.parametrize(
    "secret", [None, WRONG, f"{KEY}x", KEY[:-1]], ids=["none", "wrong", "longer", "prefix"]
)
def test_inference_without_a_valid_key_is_401(server: Server, secret: str | None) -> None:
    kserve = request(server, "POST", "/v2/models/echo/infer", secret, json=BODY)
    assert kserve.status_code == 401
    assert kserve.headers["www-authenticate"].startswith("Bearer")
    assert isinstance(kserve.json()["error"], str)
    embeddings = request(server, "POST", "/v1/embeddings", secret, json=EMBEDDINGS)
    assert embeddings.status_code == 401
    error = embeddings.json()["error"]
    assert error["type"] == "authentication_error" and error["code"] == "invalid_api_key"


def test_metadata_needs_a_key_and_health_and_metrics_stay_open(server: Server) -> None:
    for path in ("/v2", "/v2/models/echo", "/v1/models"):
        assert request(server, "GET", path, None).status_code == 401, path
        assert request(server, "GET", path, FILE_KEY).status_code == 200, path
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/echo/ready", "/metrics"):
        assert request(server, "GET", path, None).status_code == 200, path
    document = request(server, "GET", "/openapi.json", None).json()
    assert document["paths"]["/v1/embeddings"]["post"]["security"]


def test_openai_client_with_the_key(server: Server) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)
    response = client.embeddings.create(model="minilm", input=["a cat", "a dog"])
    assert [len(d.embedding) for d in response.data] == [384, 384]
    assert "minilm" in [m.id for m in client.models.list().data]
    refused = openai.OpenAI(base_url=f"{server.url}/v1", api_key=WRONG, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        refused.embeddings.create(model="minilm", input=["a cat"])


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_with_the_key(server: Server, binary: bool) -> None:
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    text = triton.InferInput("text", [2], "BYTES")
    text.set_data_from_numpy(np.array([b"one", b"two"], dtype=object), binary_data=binary)
    wanted = [triton.InferRequestedOutput("text", binary_data=binary)]
    result = client.infer(
        "echo", [text], outputs=wanted, headers={"Authorization": f"Bearer {FILE_KEY}"}
    )
    echoed = [t if isinstance(t, bytes) else t.encode() for t in result.as_numpy("text").tolist()]
    assert echoed == [b"one", b"two"]  # JSON outputs come back as str, binary ones as bytes
    assert client.is_server_ready()  # health needs no key
    with pytest.raises(InferenceServerException) as refused:
        client.infer("echo", [text], headers={"Authorization": f"Bearer {WRONG}"})
    assert refused.value.status() == "401"
    assert "Traceback" not in refused.value.message()


def test_admin_routes_need_the_admin_token(server: Server) -> None:
    assert request(server, "GET", "/admin/instances", None).status_code == 401
    assert request(server, "GET", "/admin/instances", WRONG).status_code == 401
    forbidden = request(server, "GET", "/admin/instances", KEY)
    assert forbidden.status_code == 403 and "admin token" in forbidden.json()["error"]
    rows = request(server, "GET", "/admin/instances", TOKEN).json()
    assert {row["model"] for row in rows} == {"echo", "minilm"}


def test_error_bodies_hold_no_stack_trace_nor_secret(server: Server) -> None:
    request(server, "POST", "/v2/models/echo/infer", KEY, content=b"{not json")
    request(server, "POST", "/v2/models/nope/infer", KEY, json=BODY)
    request(server, "POST", "/v1/embeddings", KEY, json={"model": "echo", "input": "x"})
    assert len(bodies) >= 3
    for body in bodies:
        assert "Traceback" not in body and 'File "' not in body
        assert not any(secret in body for secret in SECRETS), body


def test_the_log_holds_no_secret(server: Server, log_path: Path) -> None:
    log = log_path.read_text(errors="replace")
    assert "dlproxy.access" in log  # requests were logged: the check below is not vacuous
    for secret in SECRETS:
        assert secret not in log
