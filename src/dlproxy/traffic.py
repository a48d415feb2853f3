"""Which version answers a model's plain route (a weighted split: canary 95/5), and which version
also sees a share of its requests in shadow, compared with the answer the client got.

A request with a session key always reaches the same version (the key is hashed), so one user
does not flip between versions; others are drawn at random. A shadow copy never changes the
client's answer: it is computed afterwards, off the request's path, and only its latency, its
errors and how far its result is from the primary's are recorded.
"""

from __future__ import annotations

import random
import zlib
from bisect import bisect_right
from dataclasses import dataclass, field
from itertools import accumulate

import numpy as np

from dlproxy.histogram import LATENCY_BUCKETS, Histogram
from dlproxy.types import InferenceRequest

SIMILARITY_BUCKETS: tuple[float, ...] = (0.0, 0.5, 0.9, 0.99, 0.999, 0.9999, 0.99999, 1.0)


class Split:
    """A model's traffic: ``weights`` per version (any numbers >= 0, normalised) and an optional
    shadow version that also gets ``shadow_share`` (0..1) of the requests."""

    def __init__(
        self, weights: dict[str, float] | None = None, shadow: str = "", shadow_share: float = 0.0
    ) -> None:
        weights = dict(weights or {})
        if any(w < 0 for w in weights.values()) or (weights and sum(weights.values()) <= 0):
            raise ValueError(f"traffic weights must be >= 0 with a positive sum, got {weights}")
        if not 0.0 <= shadow_share <= 1.0:
            raise ValueError(f"the shadow share must be within 0..1, got {shadow_share}")
        if shadow_share and not shadow:
            raise ValueError("a shadow share needs a shadow version")
        self.weights = weights
        self.shadow = shadow
        self.shadow_share = shadow_share
        total = sum(weights.values())
        self._versions = list(weights)
        self._bounds = [b / total for b in accumulate(weights.values())]

    def __repr__(self) -> str:
        return f"Split({self.weights}, shadow={self.shadow!r}, shadow_share={self.shadow_share})"

    def versions(self) -> set[str]:
        """Every version this split names."""
        return set(self.weights) | ({self.shadow} if self.shadow else set())

    def pick(self, request: InferenceRequest) -> str | None:
        """The version that answers ``request`` (None: no split, the default answers)."""
        if not self.weights:
            return None
        draw = (
            zlib.crc32(request.session_key.encode()) / 2**32
            if request.session_key
            else random.random()
        )
        index = bisect_right(self._bounds, draw)
        return self._versions[min(index, len(self._versions) - 1)]

    def mirrors(self, answered_by: str) -> bool:
        """Whether this request, answered by ``answered_by``, is also sent to the shadow."""
        return (
            self.shadow_share > 0
            and answered_by != self.shadow
            and (self.shadow_share >= 1.0 or random.random() < self.shadow_share)
        )


@dataclass
class ShadowStats:
    """What the shadow version did with its copies: counts, latency, similarity to the primary."""

    requests: int = 0
    errors: int = 0
    dropped: int = 0  # not sent: the shadow version was full or had no ready instance
    latency: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    similarity: Histogram = field(default_factory=lambda: Histogram(SIMILARITY_BUCKETS))
    similarity_min: float = 1.0

    def compared(self, seconds: float, value: float) -> None:
        self.requests += 1
        self.latency.observe(seconds)
        self.similarity.observe(value)
        self.similarity_min = min(self.similarity_min, value)


def similarity(primary: dict[str, np.ndarray], shadow: dict[str, np.ndarray]) -> float:
    """How alike two answers are, worst row and output first: cosine for float outputs (1 is the
    same direction), the share of equal rows for the others; 0 when they do not line up."""
    worst = 1.0
    for name, want in primary.items():
        got = shadow.get(name)
        if got is None or got.shape != want.shape:
            return 0.0
        if want.dtype.kind == "f" and want.ndim >= 1 and want.size:
            a = want.reshape(len(want), -1).astype(np.float64)
            b = got.reshape(len(got), -1).astype(np.float64)
            norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
            same = np.all(a == b, axis=1)
            cosine = np.where(norms > 0, (a * b).sum(axis=1) / np.where(norms > 0, norms, 1), 0.0)
            worst = min(worst, float(np.where(same, 1.0, cosine).min()))
        else:
            rows = want.reshape(len(want), -1) if want.ndim else want.reshape(1, 1)
            other = got.reshape(len(got), -1) if got.ndim else got.reshape(1, 1)
            worst = min(worst, float(np.mean(np.all(rows == other, axis=1))))
    return worst
