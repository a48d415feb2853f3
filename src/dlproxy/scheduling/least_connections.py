"""Least connections: send work where the least is outstanding, so slow instances get less."""

from __future__ import annotations

from collections.abc import Sequence

from dlproxy.scheduling.base import Rotation, healthy, least, load
from dlproxy.types import InferenceRequest, InstanceId, InstanceView


class LeastConnections:
    """The healthy instance with the fewest in-flight plus queued requests; ties taken in turn."""

    def __init__(self) -> None:
        self._rotation = Rotation()

    def choose(self, request: InferenceRequest, instances: Sequence[InstanceView]) -> InstanceId:
        return least(healthy(instances), load, self._rotation).id
