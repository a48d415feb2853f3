"""A sentence-transformers directory served as is (models/embedder.py), checked against
sentence-transformers running the same directory, for mean and CLS pooling."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from dlproxy.models.builtin.corpus import sentences
from dlproxy.models.embedder import EmbeddingDirectory, read_layout
from dlproxy.models.registry import create_model, model_name
from embedding_dirs import build, reference, transformer_onnx

TEXTS = ["A cat sat on the mat.", "Embeddings map text to vectors.", "short", "Zürich - 東京"]
LONG = " ".join(sentences()[:30])  # several 256-token windows


@pytest.fixture(scope="module")
def graph(dlproxy_home: Path) -> Path:
    return transformer_onnx(dlproxy_home)


@pytest.fixture(scope="module")
def mean_dir(graph: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("st") / "my-mean-model", graph, "mean", normalize=True)


@pytest.fixture(scope="module")
def cls_dir(graph: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("st") / "my-cls-model", graph, "cls", normalize=False)


def embed(folder: Path, texts: list[str], **parameters: object) -> np.ndarray:
    model = create_model(str(folder))
    model.load()
    inputs = np.empty(len(texts), dtype=object)
    inputs[:] = [t.encode() for t in texts]
    return model.predict({"text": inputs}, dict(parameters))["embedding"]


@pytest.mark.parametrize("which", ["mean_dir", "cls_dir"])
def test_a_directory_embeds_as_sentence_transformers_does(
    which: str, request: pytest.FixtureRequest
) -> None:
    folder: Path = request.getfixturevalue(which)
    got = embed(folder, TEXTS)
    expected = reference(folder, TEXTS)
    assert got.shape == (len(TEXTS), 384) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=2e-4, rtol=1e-3)


def test_the_name_spec_and_recipe_come_from_the_directory(mean_dir: Path, cls_dir: Path) -> None:
    assert model_name(str(mean_dir)) == "my-mean-model"
    model = create_model(str(mean_dir))
    model.load()
    assert model.spec.name == "my-mean-model"
    assert model.spec.outputs[0].shape == (-1, 384)
    other = create_model(str(cls_dir))
    assert model.spec.recipe != other.spec.recipe  # pooling is part of the cache key
    layout = read_layout(cls_dir)
    assert (layout.pooling, layout.normalize, layout.max_seq_length) == ("cls", False, 256)


def test_mean_pooled_and_normalised_is_minilm_even_for_long_texts(mean_dir: Path) -> None:
    """The bundled model's own layout: the same numbers as the built-in minilm (fp32), which
    chunks long texts the same way."""
    minilm = create_model("minilm:fp32")
    minilm.load()
    texts = [*TEXTS, LONG]
    inputs = np.empty(len(texts), dtype=object)
    inputs[:] = [t.encode() for t in texts]
    expected = minilm.predict({"text": inputs}, {})["embedding"]
    got = embed(mean_dir, texts)
    cosine = (got * expected).sum(axis=1)
    assert cosine.min() > 0.9999
    truncated = embed(mean_dir, [LONG], truncate=True)
    assert float((truncated[0] * got[-1]).sum()) < 0.99  # chunking saw the rest of the text


def test_a_long_text_without_normalisation_is_the_weighted_mean_of_its_windows(
    cls_dir: Path,
) -> None:
    got = embed(cls_dir, [LONG])
    assert abs(float(np.linalg.norm(got[0])) - 1.0) > 0.01  # CLS vectors are not unit vectors
    first = embed(cls_dir, [LONG], truncate=True)
    assert not np.allclose(got, first)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: (d / "1_Pooling" / "config.json").unlink(), "config.json is missing"),
        (
            lambda d: (d / "1_Pooling" / "config.json").write_text(
                json.dumps({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": True})
            ),
            "exactly one of",
        ),
        (lambda d: shutil.rmtree(d / "onnx"), "has no onnx/model.onnx"),
        (
            lambda d: (d / "modules.json").write_text(
                json.dumps([{"type": "sentence_transformers.models.Transformer"}])
            ),
            "a Transformer, then a Pooling module",
        ),
    ],
    ids=["no-pooling-config", "two-modes", "no-onnx", "no-pooling-module"],
)
def test_a_broken_directory_is_refused_with_what_is_wrong(
    graph: Path, tmp_path: Path, change: object, message: str
) -> None:
    folder = build(tmp_path / "broken", graph)
    change(folder)  # type: ignore[operator]
    with pytest.raises(ValueError, match=message):
        create_model(str(folder))


def test_a_tokenizer_that_does_not_parse_is_refused_at_load(graph: Path, tmp_path: Path) -> None:
    folder = build(tmp_path / "bad-tokenizer", graph)
    (folder / "tokenizer.json").write_text("{not json")
    model = create_model(str(folder))
    with pytest.raises(ValueError, match="does not parse"):
        model.load()


def test_model_class_is_the_embedding_directory(mean_dir: Path) -> None:
    assert isinstance(create_model(str(mean_dir)), EmbeddingDirectory)
