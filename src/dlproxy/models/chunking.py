"""Divide-and-conquer inference of texts longer than a model's window.

A text longer than the window is cut into overlapping windows of tokens; every window of a batch
runs through the model with the short texts' windows, and each text's embedding is the mean of its
windows' embeddings weighted by their token counts, L2-normalised. Truncating instead would embed
only the first 256 tokens and silently drop the rest of the text. A text that fits in one window
gets exactly the window the truncating tokenizer makes (``[CLS] tokens [SEP]``), hence the same
embedding as before.

Arithmetic: a window of ``size`` tokens holds ``size - 2`` text tokens (``[CLS]`` and ``[SEP]``
around them); consecutive windows share ``overlap`` tokens, so they start ``stride = size - 2 -
overlap`` tokens apart, and a text of ``n`` tokens takes ``1 + ceil((n - (size - 2)) / stride)``
windows (1 when it fits); the last one may be shorter.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

SPECIAL_TOKENS = 2  # [CLS] and [SEP] around every window


@dataclass(frozen=True)
class Windowing:
    """How texts are cut: ``size`` tokens per window (specials included), ``overlap`` shared."""

    size: int = 256
    overlap: int = 32
    cls_id: int = 101
    sep_id: int = 102
    pad_id: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.overlap < self.content:
            raise ValueError(
                f"overlap must be >= 0 and < {self.content} (window of {self.size} tokens), "
                f"got {self.overlap}"
            )

    @property
    def content(self) -> int:
        """Text tokens in one window."""
        return self.size - SPECIAL_TOKENS

    @property
    def stride(self) -> int:
        """Tokens between the starts of consecutive windows."""
        return self.content - self.overlap

    def count(self, tokens: int) -> int:
        """Windows a text of ``tokens`` tokens (specials not counted) is cut into."""
        if tokens <= self.content:
            return 1
        return 1 + math.ceil((tokens - self.content) / self.stride)


@dataclass(frozen=True)
class Windows:
    """The windows of a batch of texts, ready for the model, and how to pool them back."""

    input_ids: np.ndarray  # (windows, longest window) int64, padded with pad_id
    attention_mask: np.ndarray  # (windows, longest window) int64
    owner: np.ndarray  # (windows,) int64: the text each window belongs to
    weight: np.ndarray  # (windows,) float32: text tokens in the window
    texts: int

    def __len__(self) -> int:
        return len(self.owner)

    def feeds(self, start: int = 0, stop: int | None = None) -> dict[str, np.ndarray]:
        """BERT's three inputs for windows ``start:stop``, trimmed to their longest window."""
        mask = self.attention_mask[start:stop]
        longest = int(mask.sum(axis=1).max()) if len(mask) else 0
        ids = self.input_ids[start:stop, :longest]
        return {
            "input_ids": ids,
            "attention_mask": mask[:, :longest],
            "token_type_ids": np.zeros_like(ids),
        }

    def runs(self, most_tokens: int) -> Iterator[dict[str, np.ndarray]]:
        """The feeds in consecutive runs of at most ``most_tokens`` padded tokens each (at least
        one window): bounds the attention memory of a batch of many long texts, while a batch of
        short texts still runs in one go."""
        lengths = self.attention_mask.sum(axis=1)
        start, longest = 0, 0
        for end, length in enumerate(lengths):
            longest = max(longest, int(length))
            if end > start and (end - start + 1) * longest > most_tokens:
                yield self.feeds(start, end)
                start, longest = end, int(length)
        if start < len(self):
            yield self.feeds(start)


def split(token_ids: Sequence[Sequence[int]], windowing: Windowing) -> Windows:
    """Cut each text's tokens (no special tokens) into windows wrapped in ``[CLS] ... [SEP]``."""
    rows: list[list[int]] = []
    owner: list[int] = []
    weight: list[int] = []
    for text, ids in enumerate(token_ids):
        for index in range(windowing.count(len(ids))):
            start = index * windowing.stride
            piece = list(ids[start : start + windowing.content])
            rows.append([windowing.cls_id, *piece, windowing.sep_id])
            owner.append(text)
            weight.append(len(piece))
    longest = max((len(row) for row in rows), default=0)
    input_ids = np.full((len(rows), longest), windowing.pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(rows), longest), dtype=np.int64)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = row
        attention_mask[i, : len(row)] = 1
    return Windows(
        input_ids,
        attention_mask,
        np.asarray(owner, dtype=np.int64),
        np.asarray(weight, dtype=np.float32),
        len(token_ids),
    )


def embed(
    windows: Windows,
    run: Callable[[dict[str, np.ndarray]], np.ndarray],
    most_tokens: int,
    width: int,
    normalize: bool = True,
) -> np.ndarray:
    """(texts, width) vectors: every window through ``run`` (one model call per run of at most
    ``most_tokens`` padded tokens, see ``Windows.runs``), pooled back per text."""
    if windows.texts == 0:
        return np.zeros((0, width), dtype=np.float32)
    vectors = np.concatenate([run(feeds) for feeds in windows.runs(most_tokens)])
    return pool(vectors, windows.owner, windows.weight, windows.texts, normalize)


def pool(
    vectors: np.ndarray,
    owner: np.ndarray,
    weight: np.ndarray,
    texts: int,
    normalize: bool = True,
) -> np.ndarray:
    """(texts, d) vectors: each text's windows averaged by token count, then normalised (unless
    the model's vectors are not: ``normalize=False`` keeps the weighted mean).

    A text with one window gets that window's vector back, so short texts embed exactly as
    without chunking.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    counts = np.bincount(owner, minlength=texts)
    if len(owner) == texts and np.all(counts == 1):  # no text was cut: nothing to pool
        out = np.empty_like(vectors)
        out[owner] = vectors
        return out
    # An empty text still has one ([CLS] [SEP]) window: give it a weight so its vector survives.
    weights = np.maximum(weight, 1.0)[:, None]
    sums = np.zeros((texts, vectors.shape[1]), dtype=np.float64)
    np.add.at(sums, owner, vectors * weights)
    if normalize:
        scale = np.linalg.norm(sums, axis=1, keepdims=True)
    else:
        scale = np.zeros((texts, 1), dtype=np.float64)
        np.add.at(scale, owner, weights)
    pooled = (sums / np.maximum(scale, 1e-12)).astype(np.float32)
    single = counts[owner] == 1
    pooled[owner[single]] = vectors[single]
    result: np.ndarray = pooled
    return result
