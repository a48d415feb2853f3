"""Chunked inference of long texts: window arithmetic, pooling, and minilm's embeddings of texts
past its 256-token window (unchanged for short texts, faithful to the whole of a long one)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dlproxy.errors import BadRequest
from dlproxy.models import chunking
from dlproxy.models.builtin import minilm
from dlproxy.models.builtin.corpus import sentences
from dlproxy.models.chunking import Windowing

TEXTS = sentences()
TECHNICAL = TEXTS[50:100]  # the corpus is grouped: software and engineering sentences
NEWS = TEXTS[0:50]
CONVERSATION = TEXTS[100:150]


def long_text(pool: list[str], words: int, seed: int = 0) -> str:
    """About ``words`` words of real sentences drawn from ``pool`` (shuffled, repeated)."""
    rng = random.Random(seed)
    out: list[str] = []
    count = 0
    while count < words:
        sentence = rng.choice(pool)
        out.append(sentence)
        count += len(sentence.split())
    return " ".join(out)


@given(st.integers(0, 2000), st.integers(4, 64), st.integers(0, 63))
def test_windows_cover_every_token_with_the_stated_overlap(n: int, size: int, overlap: int) -> None:
    if overlap >= size - 2:
        with pytest.raises(ValueError, match="overlap"):
            Windowing(size=size, overlap=overlap)
        return
    windowing = Windowing(size=size, overlap=overlap)
    tokens = list(range(1000, 1000 + n))
    windows = chunking.split([tokens], windowing)
    content = size - 2
    expected = 1 if n <= content else 1 + -(-(n - content) // (content - overlap))
    assert len(windows) == windowing.count(n) == expected
    pairs = zip(windows.input_ids, windows.attention_mask, strict=True)
    rows = [row[mask == 1] for row, mask in pairs]
    assert all(row[0] == windowing.cls_id and row[-1] == windowing.sep_id for row in rows)
    assert all(len(row) <= size for row in rows)
    pieces = [list(row[1:-1]) for row in rows]
    assert [len(p) for p in pieces] == list(windows.weight)
    # Consecutive windows share exactly ``overlap`` tokens; together they are the text, in order.
    rebuilt = pieces[0]
    for piece in pieces[1:]:
        assert rebuilt[len(rebuilt) - overlap :] == piece[:overlap]
        rebuilt += piece[overlap:]
    assert rebuilt == tokens


def test_runs_bound_padded_tokens_and_keep_every_window() -> None:
    windowing = Windowing(size=16, overlap=2)
    windows = chunking.split([list(range(100)), [5], [6, 7, 8]], windowing)
    runs = list(windows.runs(most_tokens=40))
    assert sum(len(r["input_ids"]) for r in runs) == len(windows)
    assert all(r["input_ids"].size <= 40 or len(r["input_ids"]) == 1 for r in runs)
    joined = np.concatenate([r["input_ids"][:, :1] for r in runs])
    assert (joined == windowing.cls_id).all()


def test_pool_weights_windows_by_tokens_and_normalises() -> None:
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=np.float32)
    owner = np.array([0, 0, 1])
    weight = np.array([3.0, 1.0, 7.0], dtype=np.float32)
    pooled = chunking.pool(vectors, owner, weight, texts=2)
    np.testing.assert_allclose(pooled[0], np.array([3.0, 1.0]) / np.sqrt(10.0), rtol=1e-6)
    assert (pooled[1] == vectors[2]).all()  # one window: returned as it is


@pytest.fixture(scope="module")
def model(dlproxy_home: Path) -> minilm.MiniLM:
    loaded = minilm.MiniLM("int8", threads=1)
    loaded.load()
    return loaded


def test_short_texts_embed_exactly_as_the_truncating_model(model: minilm.MiniLM) -> None:
    texts = TEXTS[::5]
    session = minilm._session(minilm.export("int8"), 1)
    unchunked = np.concatenate(
        [
            session.run([minilm.GRAPH_OUTPUT], minilm.tokenize(minilm.load_tokenizer(), part))[0]
            for part in (texts[:32], texts[32:])
        ]
    )
    chunked = np.concatenate([model.embed(texts[:32]), model.embed(texts[32:])])
    np.testing.assert_allclose(chunked, unchunked, atol=1e-6)


def test_a_5000_word_text_gets_one_embedding_from_the_stated_number_of_windows(
    model: minilm.MiniLM,
) -> None:
    text = long_text(TECHNICAL, 5000)
    assert len(text.split()) >= 5000
    tokenizer, windowing = minilm.load_splitter()
    tokens = len(tokenizer.encode(text, add_special_tokens=False).ids)
    expected = 1 + -(-(tokens - 254) // (254 - 32))
    windows = minilm.text_windows((tokenizer, windowing), [text, "short"])
    assert len(windows) == expected + 1
    assert list(windows.owner).count(0) == expected
    vectors = model.predict({"text": np.array([text.encode(), b"short"], dtype=object)}, {})
    embedding = vectors["embedding"]
    assert embedding.shape == (2, 384) and embedding.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, rtol=1e-5)


def test_a_long_text_is_closer_to_its_own_parts_than_to_unrelated_text(
    model: minilm.MiniLM,
) -> None:
    text = long_text(TECHNICAL, 5000)
    words = text.split()
    parts = [" ".join(words[i : i + 120]) for i in (0, len(words) // 2, len(words) - 120)]
    unrelated = [long_text(CONVERSATION, 120, seed=s) for s in range(3)] + [
        long_text(NEWS, 120, seed=s) for s in range(3)
    ]
    whole, *rest = model.embed([text, *parts, *unrelated])
    to_parts = rest[: len(parts)] @ whole
    to_unrelated = np.stack(rest[len(parts) :]) @ whole
    assert to_parts.min() > to_unrelated.max() + 0.1, (to_parts, to_unrelated)


def test_chunking_sees_the_end_of_a_text_that_truncation_drops(model: minilm.MiniLM) -> None:
    head = long_text(NEWS, 400, seed=1)  # more than one window of news ...
    tail = long_text(TECHNICAL, 3000, seed=2)  # ... then thousands of words on software
    text = f"{head} {tail}"
    chunked = model.embed([text])[0]
    truncated = model.embed([text], truncate=True)[0]
    (about_tail,) = model.embed([" ".join(tail.split()[-150:])])
    assert chunked @ about_tail > truncated @ about_tail + 0.1
    # Truncation keeps exactly the first window: the head alone embeds the same way.
    np.testing.assert_allclose(truncated, model.embed([head], truncate=True)[0], atol=1e-6)


def test_truncate_parameter_must_be_a_boolean(model: minilm.MiniLM) -> None:
    texts = np.array([b"a short text"], dtype=object)
    assert model.predict({"text": texts}, {"truncate": True})["embedding"].shape == (1, 384)
    with pytest.raises(BadRequest, match="truncate"):
        model.predict({"text": texts}, {"truncate": "yes"})
