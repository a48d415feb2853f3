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
        # The (id, weight) pairs the scaled weights were computed from: recomputed on change only.
        self._signature: tuple[tuple[InstanceId, float], ...] = ()
        self._scaled: tuple[int, ...] = ()
        self._total = 0
        self._scale = 1
        self._current: dict[InstanceId, int] = {}

    def choose(self, request: InferenceRequest, instances: Sequence[InstanceView]) -> InstanceId:
        signature = tuple((view.id, view.weight) for view in healthy(instances))
        if signature != self._signature:
            self._rebuild(signature)
        current = self._current
        best_id = signature[0][0]
        best = -math.inf
        for (instance, _), weight in zip(signature, self._scaled, strict=True):
            value = current[instance] + weight
            current[instance] = value
            if value > best:
                best, best_id = value, instance
        current[best_id] -= self._total
        return best_id

    def _rebuild(self, signature: tuple[tuple[InstanceId, float], ...]) -> None:
        ratios = []
        for instance, weight in signature:
            if not math.isfinite(weight):
                raise ValueError(f"Instance '{instance}' has weight {weight}; it must be finite.")
            ratios.append(max(weight, 0).as_integer_ratio())
        scale = max(denominator for _, denominator in ratios)  # powers of two: the lcm is the max
        scaled = tuple(numerator * (scale // denominator) for numerator, denominator in ratios)
        if not any(scaled):
            scaled = (1,) * len(scaled)
            scale = 0  # a different unit from any real scale
        # Ids that vanished (or turned unhealthy) are dropped; new ones start at 0. Current
        # weights are in units of 1/scale, so they are only meaningful while the scale holds.
        keep = scale == self._scale
        self._current = {
            instance: self._current.get(instance, 0) if keep else 0 for instance, _ in signature
        }
        self._signature = signature
        self._scaled = scaled
        self._total = sum(scaled)
        self._scale = scale
