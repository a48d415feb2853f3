"""Bad input gets a clear 4xx JSON error and kills nothing: the same worker PIDs keep serving."""

from __future__ import annotations

import urllib.error
import urllib.request

import httpx
import orjson
import pytest

from serving import Server

GOOD = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hello"]}]}


def infer(server: Server, body: bytes, model: str = "minilm", **headers: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v2/models/{model}/infer", content=body, headers=headers, timeout=30
    )


CASES = [
    ("malformed JSON", b'{"inputs": [', 400),
    ("not an object", b"[1, 2, 3]", 400),
    ("no inputs", b'{"inputs": []}', 400),
    (
        "wrong datatype",
        orjson.dumps(
            {"inputs": [{"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
        ),
        400,
    ),
    (
        "wrong shape",
        orjson.dumps(
            {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a"]}]}
        ),
        400,
    ),
    (
        "empty item list",
        orjson.dumps({"inputs": [{"name": "text", "shape": [0], "datatype": "BYTES", "data": []}]}),
        400,
    ),
    (
        "wrong input name",
        orjson.dumps(
            {"inputs": [{"name": "txt", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}
        ),
        400,
    ),
    (
        "too many items",
        orjson.dumps(
            {"inputs": [{"name": "text", "shape": [300], "datatype": "BYTES", "data": ["a"] * 300}]}
        ),
        413,
    ),
]


@pytest.mark.parametrize(("case", "body", "status"), CASES, ids=[c[0] for c in CASES])
def test_bad_kserve_requests_get_a_clear_error(
    minilm_server: Server, case: str, body: bytes, status: int
) -> None:
    response = infer(minilm_server, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert isinstance(error, str) and len(error) > 10
    assert "Traceback" not in error


def test_non_utf8_text_is_refused(minilm_server: Server) -> None:
    # Binary tensor extension: a BYTES element with invalid UTF-8.
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "text",
                    "shape": [1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": 6},
                }
            ]
        }
    )
    body = header + (2).to_bytes(4, "little") + b"\xff\xfe"
    response = infer(minilm_server, body, **{"Inference-Header-Content-Length": str(len(header))})
    assert response.status_code == 400
    assert "UTF-8" in response.json()["error"]


def test_unknown_model_is_404(minilm_server: Server) -> None:
    response = infer(minilm_server, orjson.dumps(GOOD), model="nope")
    assert response.status_code == 404
    assert "nope" in response.json()["error"]


def test_body_over_the_limit_is_413(minilm_server: Server) -> None:
    response = infer(minilm_server, b"x" * (17 * 1024 * 1024))
    assert response.status_code == 413


def test_openai_errors_use_the_openai_shape(minilm_server: Server) -> None:
    response = httpx.post(
        f"{minilm_server.url}/v1/embeddings", content=b'{"model": "minilm", "input": []}'
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "code"}
    response = httpx.post(
        f"{minilm_server.url}/v1/embeddings", content=b'{"model": "nope", "input": "hi"}'
    )
    assert response.status_code == 404


def test_after_all_bad_input_the_same_workers_still_serve(minilm_server: Server) -> None:
    before = minilm_server.worker_pids()
    for _, body, _ in CASES:
        infer(minilm_server, body)
    infer(minilm_server, b"\x00\xff" * 100)
    response = infer(minilm_server, orjson.dumps(GOOD))
    assert response.status_code == 200
    assert minilm_server.worker_pids() == before


def test_a_client_that_sends_a_huge_body_without_expect_reads_its_413(
    echo_server: Server,
) -> None:
    # urllib (as requests) sends the whole body before reading the answer: without lingering,
    # the gateway's early 413 reached it as a connection reset.
    request = urllib.request.Request(
        f"{echo_server.url}/v2/models/echo/infer", data=b"x" * (64 << 20)
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 413
    assert "the limit is" in orjson.loads(refused.value.read())["error"]
