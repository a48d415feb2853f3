"""Smooth weighted round robin (as nginx): capacity-proportional shares without bursts.

Plain weighted round robin sends a weight-5 instance five requests in a row; the smooth variant
interleaves them (weights 5, 1, 1 give a a b a c a a) so no instance sees a burst.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from dlproxy.scheduling.base import healthy
from dlproxy.types import InferenceRequest, InstanceId, InstanceView


class WeightedRoundRobin:
    """Each pick: every healthy instance's current weight grows by its weight; the largest
    (first in list order on a tie) is chosen and its current weight drops by the total.

    Invariant: after N picks over a fixed set, ``current_i = N * w_i - W * chosen_i`` with the
    sum of current weights 0 and each bounded, so over every cycle of ``W`` picks instance ``i``
    is chosen exactly ``w_i`` times. To keep that exact for float weights too, weights are scaled
    to integers: a float is a binary fraction, so multiplying every weight by the largest power-of-
    two denominator among them is exact (2.5, 1.5, 1.0 become 5, 3, 2). A weight of 0 or less
    gets no traffic unless every healthy instance has one, in which case all count equally.
    """

    def __init__(self) -> None:
        # Parallel lists, one slot per healthy instance, recomputed only when the ids or the
        # weights change: the ids and raw weights they came from, the weights scaled to
        # integers, and each instance's current weight.
        self._ids: list[InstanceId] = []
        self._weights: list[float] = []
        self._scaled: list[int] = []
        self._current: list[int] = []
        self._total = 0
        self._scale = 1

    def choose(self, request: InferenceRequest, instances: Sequence[InstanceView]) -> InstanceId:
        views = healthy(instances)
        ids = [view.id for view in views]
        weights = [view.weight for view in views]
        if ids != self._ids or weights != self._weights:
            self._rebuild(ids, weights)
        current, scaled = self._current, self._scaled
        best = 0
        for i in range(len(current)):
            current[i] += scaled[i]
            if current[i] > current[best]:
                best = i
        current[best] -= self._total
        return ids[best]

    def _rebuild(self, ids: list[InstanceId], weights: list[float]) -> None:
        ratios = []
        for instance, weight in zip(ids, weights, strict=True):
            if not math.isfinite(weight):
                raise ValueError(f"Instance '{instance}' has weight {weight}; it must be finite.")
            ratios.append(max(weight, 0).as_integer_ratio())
        scale = max(denominator for _, denominator in ratios)  # powers of two: the lcm is the max
        scaled = [numerator * (scale // denominator) for numerator, denominator in ratios]
        if not any(scaled):
            scaled = [1] * len(scaled)
            scale = 0  # a different unit from any real scale
        # Ids that vanished (or turned unhealthy) are dropped; new ones start at 0. Current
        # weights are in units of 1/scale, so they are only meaningful while the scale holds.
        previous = dict(zip(self._ids, self._current, strict=True)) if scale == self._scale else {}
        self._current = [previous.get(instance, 0) for instance in ids]
        self._ids = ids
        self._weights = weights
        self._scaled = scaled
        self._total = sum(scaled)
        self._scale = scale
