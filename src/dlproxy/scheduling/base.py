"""The scheduling interface, the registry of policies, and the mechanism policies share.

Policies stay small by leaning on the helpers here: ``healthy`` (filter, or raise), ``load``
(what "busy" means) and ``Rotation`` / ``least`` (share choices out in turn, so that equal
instances split the traffic instead of the first one taking it all).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from dlproxy.plugins import load_named
from dlproxy.types import InferenceRequest, InstanceId, InstanceView

POLICIES: dict[str, str] = {
    "round_robin": "dlproxy.scheduling.round_robin:RoundRobin",
    "weighted_round_robin": "dlproxy.scheduling.weighted_round_robin:WeightedRoundRobin",
    "least_connections": "dlproxy.scheduling.least_connections:LeastConnections",
    "least_response_time": "dlproxy.scheduling.least_response_time:LeastResponseTime",
    "consistent_hash": "dlproxy.scheduling.consistent_hash:ConsistentHash",
    "power_of_two": "dlproxy.scheduling.power_of_two:PowerOfTwo",
}

T = TypeVar("T")


class NoHealthyInstance(Exception):
    """Raised by ``choose`` when no instance in the list is healthy."""


class SchedulingPolicy(Protocol):
    """Picks one instance for a request. Synchronous, no I/O, called once per request.

    ``instances`` is the current list (it may change between calls: instances join and leave);
    a policy must only return the id of a healthy instance from it, or raise NoHealthyInstance.
    """

    def choose(
        self, request: InferenceRequest, instances: Sequence[InstanceView]
    ) -> InstanceId: ...


def create_policy(name: str) -> SchedulingPolicy:
    """A new policy object of the registered ``name``."""
    cls = load_named(POLICIES, name, "scheduling policy")
    policy: SchedulingPolicy = cls()
    return policy


def healthy(instances: Sequence[InstanceView]) -> list[InstanceView]:
    """The healthy instances, in their given order; raises NoHealthyInstance if there are none."""
    views = [view for view in instances if view.healthy]
    if not views:
        raise NoHealthyInstance(
            f"No healthy instance to schedule on ({len(instances)} known, none healthy)."
        )
    return views


def load(view: InstanceView) -> int:
    """How busy an instance is: requests sent to it and not yet answered, queued or running."""
    return view.inflight + view.queue_depth


class Rotation:
    """A turn counter: each ``pick`` takes the next candidate in turn."""

    __slots__ = ("_turn",)

    def __init__(self) -> None:
        self._turn = 0

    def pick(self, candidates: Sequence[T]) -> T:
        # Kept below len(candidates) so it stays a small int; when the list changes length the
        # rotation simply goes on from the same position.
        turn = self._turn % len(candidates)
        self._turn = turn + 1
        return candidates[turn]


def least(
    views: Sequence[InstanceView],
    key: Callable[[InstanceView], float],
    rotation: Rotation,
) -> InstanceView:
    """The view with the smallest ``key`` (one pass); ties are taken in turn via ``rotation``."""
    best = views[0]
    best_key = key(best)
    ties = [best]
    for view in views[1:]:
        k = key(view)
        if k < best_key:
            best, best_key, ties = view, k, [view]
        elif k == best_key:
            ties.append(view)
    return best if len(ties) == 1 else rotation.pick(ties)
