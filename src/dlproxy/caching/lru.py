"""Least recently used: the baseline, good when recent use predicts the next use."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class LRU:
    """Evicts the key whose last access is oldest. One ordered dict, oldest first."""

    __slots__ = ("_order",)

    def __init__(self, capacity: int) -> None:
        self._order: OrderedDict[Hashable, None] = OrderedDict()

    def record_insert(self, key: Hashable) -> None:
        self._order[key] = None

    def record_hit(self, key: Hashable) -> None:
        self._order.move_to_end(key)

    def record_remove(self, key: Hashable) -> None:
        del self._order[key]

    def evict(self) -> Hashable:
        return self._order.popitem(last=False)[0]
