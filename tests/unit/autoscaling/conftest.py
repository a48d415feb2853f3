"""A snapshot factory for the policy tests: only what a test cares about needs naming."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from dlproxy.autoscaling.base import Snapshot

MakeSnapshot = Callable[..., Snapshot]


@pytest.fixture
def make_snapshot() -> MakeSnapshot:
    def make(**fields: Any) -> Snapshot:
        values: dict[str, Any] = {
            "model": "m",
            "ready": 2,
            "starting": 0,
            "inflight": 0,
            "queued": 0,
            "arrival_rate": 0.0,
            "service_time": 0.0025,
            "cpu": 0.0,
            "memory": 0.2,
            "p99_latency": 0.0,
            "startup_time": 3.0,
        }
        values.update(fields)
        return Snapshot(**values)

    return make
