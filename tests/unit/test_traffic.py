"""Traffic between versions (traffic.Split) and how a shadow's answer is compared (similarity)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from dlproxy.traffic import Split, similarity
from dlproxy.types import InferenceRequest


def request(session: str | None = None) -> InferenceRequest:
    return InferenceRequest("m", {"x": np.zeros((1, 1), np.float32)}, session_key=session)


def test_weights_share_requests_out_in_proportion() -> None:
    split = Split({"1": 95, "2": 5})
    picks = Counter(split.pick(request()) for _ in range(20_000))
    assert set(picks) == {"1", "2"}
    assert picks["2"] / 20_000 == pytest.approx(0.05, abs=0.01)


def test_a_version_with_no_weight_gets_nothing_and_no_weights_means_the_default() -> None:
    assert {Split({"1": 0, "2": 1}).pick(request()) for _ in range(500)} == {"2"}
    assert Split({}, shadow="2", shadow_share=0.5).pick(request()) is None


def test_one_session_always_reaches_the_same_version() -> None:
    split = Split({"1": 50, "2": 50})
    for session in ("alice", "bob", "carol", "dave"):
        assert len({split.pick(request(session)) for _ in range(50)}) == 1
    seen = {split.pick(request(f"user-{i}")) for i in range(200)}
    assert seen == {"1", "2"}  # sessions are spread over both


def test_the_shadow_mirrors_its_share_and_never_its_own_answers() -> None:
    split = Split({"1": 1}, shadow="2", shadow_share=0.25)
    mirrored = sum(split.mirrors("1") for _ in range(20_000))
    assert mirrored / 20_000 == pytest.approx(0.25, abs=0.02)
    assert not any(split.mirrors("2") for _ in range(100))


@pytest.mark.parametrize(
    ("weights", "shadow", "share", "message"),
    [
        ({"1": -1}, "", 0.0, "must be >= 0"),
        ({"1": 0}, "", 0.0, "positive sum"),
        ({}, "", 0.5, "needs a shadow version"),
        ({}, "2", 1.5, "within 0..1"),
    ],
)
def test_bad_splits_are_refused(
    weights: dict[str, float], shadow: str, share: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Split(weights, shadow, share)


def test_similarity_is_the_worst_row_cosine_for_floats_and_equality_for_the_rest() -> None:
    a = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    assert similarity({"e": a}, {"e": a.copy()}) == 1.0
    turned = np.array([[1.0, 0.0], [1.0, 1.0]], np.float32)  # row 2 is 45 degrees off
    assert similarity({"e": a}, {"e": turned}) == pytest.approx(np.sqrt(0.5))
    labels = np.array([3, 4, 5, 6])
    assert similarity({"l": labels}, {"l": np.array([3, 4, 0, 6])}) == 0.75
    assert similarity({"e": a}, {"e": a[:1]}) == 0.0  # rows do not line up
    assert similarity({"e": a}, {"other": a}) == 0.0
    zero = np.zeros((1, 2), np.float32)
    assert similarity({"e": zero}, {"e": zero}) == 1.0
