"""Rows (one item's outputs) and keys for the shared-level tests."""

from __future__ import annotations

import numpy as np


def make_row(i: int) -> dict[str, np.ndarray]:
    """One item's outputs as a model returns them: an embedding, a label and a text."""
    rng = np.random.default_rng(i)
    text = np.empty(1, dtype=object)
    text[0] = f"item {i}".encode()
    return {
        "embedding": rng.standard_normal((1, 384)).astype(np.float32),
        "label": np.array([i], dtype=np.int64),
        "text": text,
    }


def key(i: int) -> bytes:
    return i.to_bytes(16, "big")


def assert_same_row(got: dict[str, np.ndarray] | None, want: dict[str, np.ndarray]) -> None:
    assert got is not None
    assert got.keys() == want.keys()
    for name, array in want.items():
        assert got[name].dtype == array.dtype, name
        assert got[name].shape == array.shape, name
        assert got[name].tolist() == array.tolist(), name
