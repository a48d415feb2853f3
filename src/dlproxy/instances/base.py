"""What every kind of instance (worker process, Ray actor, remote server) shares: a batch queue
in front of something that computes batches, seen by the scheduler through one ``InstanceView``."""

from __future__ import annotations

import asyncio
from typing import Any

from dlproxy.batching.batcher import Batcher, Outputs
from dlproxy.types import InferenceRequest, InstanceView


class BatchedInstance:
    """The shared part; a subclass sets ``id``, ``weight``, ``state`` and ``batcher``."""

    id: str
    weight: float
    state: str
    batcher: Batcher

    @property
    def latency_ewma(self) -> float:
        """Smoothed batch round trip, seconds (0 before the first batch)."""
        return self.batcher.latency_ewma

    def view(self) -> InstanceView:
        return InstanceView(
            self.id,
            self.weight,
            self.batcher.inflight,
            self.batcher.queued,
            self.latency_ewma,
            self.state == "ready",
        )

    def submit(
        self, request: InferenceRequest, parameters: dict[str, Any]
    ) -> asyncio.Future[Outputs]:
        return self.batcher.submit(request, parameters)
