"""The unmodified tritonclient and openai packages against a running server, checked against the
model run directly in this process."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import tritonclient.http as triton
from openai import OpenAI

from dlproxy.models.builtin.minilm import MiniLM
from serving import Server

SENTENCES = [
    "The committee postponed its decision until the next quarterly meeting.",
    "Can you recommend a quiet restaurant near the train station?",
    "Heavy rain is expected across the northern valleys by Tuesday evening.",
]


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    model = MiniLM(variant="fp32", threads=1)
    model.load()
    texts = np.array([s.encode() for s in SENTENCES], dtype=object)
    return model.predict({"text": texts}, {})["embedding"]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_infer_matches_the_model(
    minilm_server: Server, reference: np.ndarray, binary: bool
) -> None:
    client = triton.InferenceServerClient(minilm_server.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("minilm")
    metadata = client.get_model_metadata("minilm")
    assert metadata["inputs"][0]["name"] == "text"
    text = triton.InferInput("text", [len(SENTENCES)], "BYTES")
    text.set_data_from_numpy(
        np.array([s.encode() for s in SENTENCES], dtype=object), binary_data=binary
    )
    wanted = triton.InferRequestedOutput("embedding", binary_data=binary)
    result = client.infer("minilm", [text], outputs=[wanted])
    embedding = result.as_numpy("embedding")
    assert embedding.shape == (3, 384) and embedding.dtype == np.float32
    assert cosines(embedding, reference).min() >= 0.999


def test_tritonclient_sees_the_dlproxy_headers(minilm_server: Server) -> None:
    import httpx

    body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [SENTENCES[0]]}]}
    response = httpx.post(
        f"{minilm_server.url}/v2/models/minilm/infer", json=body, headers={"X-Request-Id": "abc-1"}
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "abc-1"
    assert response.headers["x-dlproxy-instance"].startswith("w")
    assert response.headers["x-dlproxy-cache"] == "miss"
    assert response.json()["outputs"][0]["shape"] == [1, 384]


def test_openai_client_embeddings_match_the_model(
    minilm_server: Server, reference: np.ndarray
) -> None:
    client = OpenAI(base_url=f"{minilm_server.url}/v1", api_key="unused", max_retries=0)
    assert "minilm" in [m.id for m in client.models.list().data]
    for encoding in ("float", "base64"):
        response = client.embeddings.create(
            model="minilm", input=SENTENCES, encoding_format=encoding
        )  # type: ignore[arg-type]
        rows = [d.embedding for d in sorted(response.data, key=lambda d: d.index)]
        if (
            encoding == "base64"
        ):  # asked for explicitly, the client hands the base64 text over as is
            rows = [np.frombuffer(base64.b64decode(row), dtype="<f4") for row in rows]  # type: ignore[arg-type]
        embedding = np.array(rows, dtype=np.float32)
        assert embedding.shape == (3, 384)
        assert cosines(embedding, reference).min() >= 0.999


def test_a_kserve_and_an_openai_request_give_the_same_embedding(minilm_server: Server) -> None:
    client = OpenAI(base_url=f"{minilm_server.url}/v1", api_key="unused", max_retries=0)
    via_openai = np.array(
        client.embeddings.create(model="minilm", input=SENTENCES[1]).data[0].embedding
    )
    triton_client = triton.InferenceServerClient(minilm_server.url.removeprefix("http://"))
    text = triton.InferInput("text", [1], "BYTES")
    text.set_data_from_numpy(np.array([SENTENCES[1].encode()], dtype=object))
    via_kserve = triton_client.infer("minilm", [text]).as_numpy("embedding")[0]
    assert np.allclose(via_openai, via_kserve, atol=1e-5)
