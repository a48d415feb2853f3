"""Round robin: each healthy instance in turn, the baseline that needs no load figures."""

from __future__ import annotations

from collections.abc import Sequence

from dlproxy.scheduling.base import Rotation, healthy
from dlproxy.types import InferenceRequest, InstanceId, InstanceView


class RoundRobin:
    """Cycles over the healthy instances in list order."""

    def __init__(self) -> None:
        self._rotation = Rotation()

    def choose(self, request: InferenceRequest, instances: Sequence[InstanceView]) -> InstanceId:
        return self._rotation.pick(healthy(instances)).id
