"""Two levels: a small hot LRU in front of a larger main area, promoting on the second access.

A new key enters the main area on probation. Its first hit (the second time it is asked for)
promotes it to the hot level; when the hot level is over its share, its least recent key goes
back to the most recent end of main. Evictions come from main's old end, and from hot only when
main is empty. So a one-off scan of new keys churns through main and cannot push out keys that
were asked for twice.

Because any hit in main promotes the key out of main, main's order is simply the order keys
entered it (FIFO and LRU are the same thing there).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

HOT_SHARE = 0.1


class TwoLevel:
    """A hot LRU of about 10% of the capacity (at least one entry) over a main LRU."""

    __slots__ = ("_hot", "_hot_max", "_main")

    def __init__(self, capacity: int) -> None:
        self._hot_max = max(1, int(capacity * HOT_SHARE))
        self._hot: OrderedDict[Hashable, None] = OrderedDict()
        self._main: OrderedDict[Hashable, None] = OrderedDict()

    def record_insert(self, key: Hashable) -> None:
        self._main[key] = None

    def record_hit(self, key: Hashable) -> None:
        hot = self._hot
        if key in hot:
            hot.move_to_end(key)
            return
        del self._main[key]
        hot[key] = None
        if len(hot) > self._hot_max:
            self._main[hot.popitem(last=False)[0]] = None

    def record_remove(self, key: Hashable) -> None:
        if key in self._hot:
            del self._hot[key]
        else:
            del self._main[key]

    def evict(self) -> Hashable:
        if self._main:
            return self._main.popitem(last=False)[0]
        return self._hot.popitem(last=False)[0]

    def is_hot(self, key: Hashable) -> bool:
        """Whether ``key`` sits in the hot level (for tests and inspection)."""
        return key in self._hot
