"""A user's own sentence-transformers directory served without code: `dlproxy serve --model DIR`,
reached by the unmodified openai and tritonclient packages, checked against sentence-transformers
running the same directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton
from openai import OpenAI

from dlproxy.models.builtin.corpus import sentences
from embedding_dirs import build, reference, transformer_onnx
from serving import Server

TEXTS = ["A cat sat on the mat.", "Heavy rain is expected by Tuesday.", " ".join(sentences()[:30])]


@pytest.fixture(scope="module")
def folder(dlproxy_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("own") / "acme-cls", transformer_onnx(dlproxy_home), "cls")


@pytest.fixture(scope="module")
def server(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("own-server") / "server.log"
    running = Server("--model", str(folder), "--instances", "1", "--threads", "1", log=log)
    yield running.wait_ready()
    running.stop()


def test_openai_embeddings_match_sentence_transformers(server: Server, folder: Path) -> None:
    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused")
    answer = client.embeddings.create(model="acme-cls", input=TEXTS[:2])
    got = np.array([d.embedding for d in answer.data], dtype=np.float32)
    np.testing.assert_allclose(got, reference(folder, TEXTS[:2]), atol=2e-4, rtol=1e-3)
    assert [m.id for m in client.models.list()] == ["acme-cls"]


def test_tritonclient_gets_chunked_long_texts_and_the_metadata(server: Server) -> None:
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    metadata = client.get_model_metadata("acme-cls")
    assert metadata["outputs"][0] == {"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}
    text = triton.InferInput("text", [len(TEXTS)], "BYTES")
    text.set_data_from_numpy(np.array([t.encode() for t in TEXTS], dtype=object))
    embedding = client.infer("acme-cls", [text]).as_numpy("embedding")
    assert embedding.shape == (3, 384)
    assert np.allclose(np.linalg.norm(embedding, axis=1), 1.0, atol=1e-4)  # Normalize module
    single = client.infer("acme-cls", [_one(TEXTS[2])]).as_numpy("embedding")
    np.testing.assert_allclose(single[0], embedding[2], atol=1e-5)  # same alone as in a batch


def _one(text: str) -> triton.InferInput:
    tensor = triton.InferInput("text", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([text.encode()], dtype=object))
    return tensor
