"""Least response time: weigh outstanding work by how fast each instance has been answering.

Least connections treats a slow instance and a fast one alike when both are idle; multiplying by
the latency EWMA sends new work where it is expected to finish first.
"""

from __future__ import annotations

from collections.abc import Sequence

from dlproxy.scheduling.base import Rotation, healthy, least, load
from dlproxy.types import InferenceRequest, InstanceId, InstanceView


class LeastResponseTime:
    """Minimises ``latency_ewma * (in-flight + queued + 1)`` over the healthy instances.

    An instance with no latency sample yet (``latency_ewma == 0``) is scored at the mean of those
    that have one, so a new instance is tried as soon as it is less loaded than the others instead
    of being starved (scored at its true 0 it would take everything; at infinity, nothing). With
    no samples at all every instance counts as 1.0 and this is least connections. Ties are taken
    in turn.
    """

    def __init__(self) -> None:
        self._rotation = Rotation()

    def choose(self, request: InferenceRequest, instances: Sequence[InstanceView]) -> InstanceId:
        views = healthy(instances)
        sampled = [view.latency_ewma for view in views if view.latency_ewma > 0.0]
        unknown = sum(sampled) / len(sampled) if sampled else 1.0

        def score(view: InstanceView) -> float:
            return (view.latency_ewma or unknown) * (load(view) + 1)

        return least(views, score, self._rotation).id
