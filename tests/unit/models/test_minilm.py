"""MiniLM: the ONNX export matches sentence-transformers, int8 keeps quality, exports are cached."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from dlproxy.errors import BadRequest
from dlproxy.models.artifacts import locked
from dlproxy.models.builtin import minilm
from dlproxy.models.builtin.corpus import sentences
from dlproxy.models.builtin.minilm import (
    MiniLM,
    export,
    load_tokenizer,
    onnx_path,
    sentence_transformer_reference,
)
from dlproxy.models.registry import create_model

TEXTS = sentences()
REFERENCE_TEXTS = TEXTS[::2]  # sentence-transformers in torch is slow; half the corpus is plenty


def as_bytes(texts: list[str]) -> np.ndarray:
    array = np.empty(len(texts), dtype=object)
    array[:] = [t.encode("utf-8") for t in texts]
    return array


def embed(model: MiniLM, texts: list[str], batch: int = 32) -> np.ndarray:
    """Through predict, as a worker calls it, in batches of mixed lengths (padding exercised)."""
    parts = [
        model.predict({"text": as_bytes(texts[i : i + batch])}, {})["embedding"]
        for i in range(0, len(texts), batch)
    ]
    return np.concatenate(parts)


@pytest.fixture(scope="module")
def fp32(dlproxy_home: Path) -> MiniLM:
    model = MiniLM("fp32", threads=2)
    model.load()
    return model


@pytest.fixture(scope="module")
def int8(dlproxy_home: Path) -> MiniLM:
    model = MiniLM("int8", threads=2)
    model.load()
    return model


@pytest.fixture(scope="module")
def fp32_vectors(fp32: MiniLM) -> np.ndarray:
    return embed(fp32, TEXTS)


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return sentence_transformer_reference(REFERENCE_TEXTS)


def test_spec() -> None:
    model = MiniLM("int8", threads=1)
    spec = model.spec
    assert (spec.name, spec.version, spec.platform) == ("minilm", "int8", "onnxruntime")
    assert [(t.name, t.datatype, t.shape) for t in spec.inputs] == [("text", "BYTES", (-1,))]
    assert [(t.name, t.datatype, t.shape) for t in spec.outputs] == [
        ("embedding", "FP32", (-1, 384))
    ]
    assert spec.max_batch_size == 256
    assert MiniLM("torch").spec.platform == "pytorch"


def test_default_variant_and_reference_parsing() -> None:
    assert MiniLM().variant == minilm.DEFAULT_VARIANT
    model = create_model("minilm:fp32", threads=2)
    assert isinstance(model, MiniLM)
    assert (model.variant, model.threads) == ("fp32", 2)
    with pytest.raises(ValueError, match="fp16"):
        MiniLM("fp16")


def test_fp32_matches_sentence_transformers(
    fp32_vectors: np.ndarray, reference: np.ndarray
) -> None:
    assert fp32_vectors.shape == (len(TEXTS), 384)
    assert fp32_vectors.dtype == np.float32
    ours = fp32_vectors[::2]
    assert reference.shape == ours.shape
    cosine = (ours * reference).sum(axis=1) / np.linalg.norm(reference, axis=1)
    assert cosine.min() >= 0.999


def test_int8_keeps_quality(int8: MiniLM, fp32_vectors: np.ndarray) -> None:
    cosine = (embed(int8, TEXTS) * fp32_vectors).sum(axis=1)
    assert cosine.mean() >= 0.99
    assert cosine.min() >= 0.97


def test_outputs_are_unit_vectors(fp32_vectors: np.ndarray, int8: MiniLM) -> None:
    np.testing.assert_allclose(np.linalg.norm(fp32_vectors, axis=1), 1.0, atol=1e-5)
    vectors = embed(int8, TEXTS[:40], batch=7)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_batching_does_not_change_results(fp32: MiniLM, fp32_vectors: np.ndarray) -> None:
    alone = np.concatenate([embed(fp32, [t]) for t in TEXTS[:8]])
    np.testing.assert_allclose(alone, fp32_vectors[:8], atol=1e-5)


def test_edge_inputs(int8: MiniLM) -> None:
    empty = int8.predict({"text": np.empty(0, dtype=object)}, {})["embedding"]
    assert empty.shape == (0, 384)
    long = " ".join(["token"] * 2000)  # truncated to 256 tokens, not an error
    mixed = int8.predict({"text": as_bytes(["", "café ☕ 東京", long])}, {})["embedding"]
    assert mixed.shape == (3, 384)
    assert np.isfinite(mixed).all()
    with pytest.raises(BadRequest, match="UTF-8"):
        int8.predict({"text": np.array([b"\xff\xfe"], dtype=object)}, {})


def test_export_is_cached(fp32: MiniLM, int8: MiniLM) -> None:
    stamps = {v: onnx_path(v).stat().st_mtime_ns for v in ("fp32", "int8")}
    assert export("fp32") == onnx_path("fp32")
    again = MiniLM("int8", threads=1)
    again.load()
    assert {v: onnx_path(v).stat().st_mtime_ns for v in ("fp32", "int8")} == stamps
    leftovers = [p.name for v in ("fp32", "int8") for p in onnx_path(v).parent.glob(".tmp-*")]
    assert leftovers == []


def test_export_lock_waits_for_the_holder(tmp_path: Path) -> None:
    import fcntl

    lock = tmp_path / ".export.lock"
    waited = threading.Event()
    entered = threading.Event()

    def contender() -> None:
        with locked(lock, waited.set):
            entered.set()

    with open(lock, "a+b") as holder:
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
        thread = threading.Thread(target=contender)
        thread.start()
        assert waited.wait(5)
        assert not entered.is_set()
        fcntl.flock(holder.fileno(), fcntl.LOCK_UN)
    thread.join(5)
    assert entered.is_set()


def test_torch_variant_matches_fp32(fp32_vectors: np.ndarray) -> None:
    model = MiniLM("torch", threads=2)
    model.load()
    count = 96
    cosine = (embed(model, TEXTS[:count]) * fp32_vectors[:count]).sum(axis=1)
    assert cosine.min() >= 0.999


def test_a_batch_reports_the_tokens_it_ran_and_the_padding_beside_them(int8: MiniLM) -> None:
    """``tokens()``: real tokens (every text's, with [CLS] and [SEP]) and the padded total (texts
    x the longest): what ``dlproxy_batch_tokens`` counts."""
    short, long = "Hi.", "A much longer sentence, with many more words in it than the first one."
    tokenizer = load_tokenizer()
    tokenizer.no_padding()
    lengths = [len(tokenizer.encode(text).ids) for text in (short, long)]
    int8.predict({"text": as_bytes([short, long])}, {})
    assert int8.tokens() == (sum(lengths), 2 * max(lengths))
    int8.predict({"text": as_bytes([long])}, {})
    assert int8.tokens() == (lengths[1], lengths[1])  # since the last predict only
