"""Consistent hashing with bounded loads: the same key goes to the same instance (warm caches,
session state) while no instance is pushed far above the average load.

Plain consistent hashing lets one hot key overload its instance; the bound (Mirrokni, Thorup and
Zadeh, "Consistent Hashing with Bounded Loads", 2018) caps every instance at ``c`` times the
average and spills the excess clockwise, moving as few keys as possible.
"""

from __future__ import annotations

import hashlib
import math
from bisect import bisect_left
from collections.abc import Sequence

from dlproxy.scheduling.base import healthy, load
from dlproxy.types import InferenceRequest, InstanceId, InstanceView


def _point(data: bytes) -> int:
    """A stable 64-bit position on the ring (unlike ``hash()``, the same in every process)."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class ConsistentHash:
    """Routes on ``request.routing_key()`` over a ring of ``virtual_nodes`` points per instance.

    The ring holds every listed instance, healthy or not, and is rebuilt only when the set of ids
    changes: a health flap does not reshuffle keys. A lookup walks clockwise from the key's point
    to the first healthy instance whose load is below ``ceil(load_factor * (total + 1) / n)``,
    where ``total`` is the load of the ``n`` healthy instances. Such an instance always exists
    (were all at capacity, their loads would sum to more than ``total``), so the walk ends within
    one turn of the ring; with loads below the bound it is plain consistent hashing.
    """

    def __init__(self, virtual_nodes: int = 160, load_factor: float = 1.25) -> None:
        if virtual_nodes < 1:
            raise ValueError(f"virtual_nodes must be at least 1, got {virtual_nodes}.")
        if not load_factor >= 1.0:
            raise ValueError(f"load_factor must be at least 1.0, got {load_factor}.")
        self._virtual_nodes = virtual_nodes
        self._load_factor = load_factor
        self._members: frozenset[InstanceId] = frozenset()
        self._points: list[int] = []
        self._owners: list[InstanceId] = []

    def choose(self, request: InferenceRequest, instances: Sequence[InstanceView]) -> InstanceId:
        views = healthy(instances)
        members = frozenset(view.id for view in instances)
        if members != self._members:
            self._build(members)
        loads = {view.id: load(view) for view in views}
        capacity = math.ceil(self._load_factor * (sum(loads.values()) + 1) / len(views))
        points, owners = self._points, self._owners
        start = bisect_left(points, _point(request.routing_key().encode()))
        size = len(points)
        for step in range(size):
            owner = owners[(start + step) % size]
            owner_load = loads.get(owner)  # None: unhealthy
            if owner_load is not None and owner_load < capacity:
                return owner
        raise AssertionError("unreachable: some healthy instance is always below capacity")

    def _build(self, members: frozenset[InstanceId]) -> None:
        ring = sorted(
            (_point(f"{instance}#{replica}".encode()), instance)
            for instance in members
            for replica in range(self._virtual_nodes)
        )
        self._points = [point for point, _ in ring]
        self._owners = [instance for _, instance in ring]
        self._members = members
