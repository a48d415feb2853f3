"""Least frequently used, in O(1) per operation (Shah, Mitra and Matani, 2010).

Keys with the same count share a bucket; buckets form a doubly linked list in increasing count.
A hit moves a key to the next bucket (creating it if the next count is missing), so the least
frequent key is always in the first bucket, without a heap and without a scan. Within a bucket
the order is LRU, so ties go to the key that reached that count longest ago. Counts are kept only
while a key is cached (in-cache LFU): an evicted key starts again at one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class _Bucket:
    """The keys read exactly ``count`` times, oldest arrival first; a node of the count list."""

    __slots__ = ("count", "keys", "next", "prev")

    def __init__(self, count: int) -> None:
        self.count = count
        self.keys: OrderedDict[Hashable, None] = OrderedDict()
        self.prev: _Bucket = self
        self.next: _Bucket = self


class LFU:
    """Evicts the least frequently used key; the least recently used among equals."""

    __slots__ = ("_bucket_of", "_head")

    def __init__(self, capacity: int) -> None:
        # A sentinel (count 0) closes the circular list: head.next is the smallest count.
        self._head = _Bucket(0)
        self._bucket_of: dict[Hashable, _Bucket] = {}

    def record_insert(self, key: Hashable) -> None:
        first = self._head.next
        if first.count != 1:
            first = self._link_after(self._head, 1)
        first.keys[key] = None
        self._bucket_of[key] = first

    def record_hit(self, key: Hashable) -> None:
        bucket = self._bucket_of[key]
        following = bucket.next
        if following.count != bucket.count + 1:
            following = self._link_after(bucket, bucket.count + 1)
        following.keys[key] = None
        self._bucket_of[key] = following
        self._discard(bucket, key)

    def record_remove(self, key: Hashable) -> None:
        self._discard(self._bucket_of.pop(key), key)

    def evict(self) -> Hashable:
        first = self._head.next
        key = first.keys.popitem(last=False)[0]
        del self._bucket_of[key]
        if not first.keys:
            self._unlink(first)
        return key

    def count(self, key: Hashable) -> int:
        """How often ``key`` was used since it entered (for tests and inspection)."""
        return self._bucket_of[key].count

    def _discard(self, bucket: _Bucket, key: Hashable) -> None:
        del bucket.keys[key]
        if not bucket.keys:
            self._unlink(bucket)

    @staticmethod
    def _link_after(bucket: _Bucket, count: int) -> _Bucket:
        new = _Bucket(count)
        new.prev, new.next = bucket, bucket.next
        bucket.next.prev = new
        bucket.next = new
        return new

    @staticmethod
    def _unlink(bucket: _Bucket) -> None:
        bucket.prev.next = bucket.next
        bucket.next.prev = bucket.prev
