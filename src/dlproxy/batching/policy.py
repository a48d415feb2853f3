"""How big a batch may grow and how long a partial batch may wait: fixed, or adaptive (AIMD)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class FixedBatching:
    """A fixed limit. ``max_delay`` bounds how long a partial batch waits behind a busy instance."""

    max_batch: int = 32
    max_delay: float = 0.002

    def observe(self, latency: float, batch_size: int) -> None:
        """Fixed limits learn nothing."""
