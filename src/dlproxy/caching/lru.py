"""Least recently used: the baseline, good when recent use predicts the next use."""

from __future__ import annotations

from collections.abc import Hashable

from dlproxy.caching.fifo import FIFO


class LRU(FIFO):
    """Evicts the key whose last access is oldest: FIFO's ordered dict, where a hit moves the key
    to the young end."""

    __slots__ = ()

    def record_hit(self, key: Hashable) -> None:
        self._order.move_to_end(key)
