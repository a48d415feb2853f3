"""First in, first out: the cheapest policy (a hit writes nothing), a baseline for the others."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class FIFO:
    """Evicts the key inserted longest ago, whatever its hits.

    An ordered dict rather than a plain dict: popping a plain dict's first key over and over
    leaves holes that each ``next(iter(d))`` has to skip, which is O(n).
    """

    __slots__ = ("_order",)

    def __init__(self, capacity: int) -> None:
        self._order: OrderedDict[Hashable, None] = OrderedDict()

    def record_insert(self, key: Hashable) -> None:
        self._order[key] = None

    def record_hit(self, key: Hashable) -> None:
        """Hits change nothing: that is the policy."""

    def record_remove(self, key: Hashable) -> None:
        del self._order[key]

    def evict(self) -> Hashable:
        return self._order.popitem(last=False)[0]
