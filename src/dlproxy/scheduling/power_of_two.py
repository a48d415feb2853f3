"""Power of two choices: near least-loaded balance from two random probes instead of a full scan.

Sampling two instances and taking the lighter avoids the herd effect of every gateway sending to
the one instance that looks idlest in stale load figures, while still cutting the maximum load
exponentially compared with a single random choice (Mitzenmacher, "The Power of Two Choices").
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from dlproxy.scheduling.base import healthy, load
from dlproxy.types import InferenceRequest, InstanceId, InstanceView


class PowerOfTwo:
    """Samples two distinct healthy instances and picks the one with the lower load.

    ``seed`` makes the choices reproducible (tests, the simulator); on a tie the first sampled,
    itself random, wins.
    """

    def __init__(self, seed: int | None = None) -> None:
        self._random = random.Random(seed)

    def choose(self, request: InferenceRequest, instances: Sequence[InstanceView]) -> InstanceId:
        views = healthy(instances)
        n = len(views)
        if n == 1:
            return views[0].id
        i = self._random.randrange(n)
        j = self._random.randrange(n - 1)
        if j >= i:  # two distinct indices, uniformly, with two draws and no retry loop
            j += 1
        first, second = views[i], views[j]
        return second.id if load(second) < load(first) else first.id
