"""Fair shares of one instance's queue between clients: start-time fair queuing (virtual time).

First come, first served gives a client that sends ten times more ten times the capacity, and
everyone else its queueing delay. Here each queued request carries a virtual finish tag: its
client's previous tag (or the queue's virtual time, for a client with nothing queued) plus its
units over the client's weight. Served in tag order, backlogged clients get capacity in proportion
to their weights whatever they send: a light client's request starts at the virtual time and goes
in the next batch, a flood waits behind itself. With one client the order is arrival order.

When the queue is full, an arriving request whose client is within its share takes the place of
the newest request of the client most over its share (that one is refused, naming the reason);
the admission estimate of queue wait counts what tag order puts ahead of the request, not the
whole queue.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

MAX_IDLE_TAGS = 1024
"""Finish tags kept before those of idle clients that the virtual time has passed are dropped
(a passed tag means the same as none: the client starts at the virtual time)."""


@dataclass
class FairShares:
    weights: Mapping[str, float] = field(default_factory=dict)
    """A client's weight (API key digest or address, as the gateway names it); 1 if absent."""

    def __post_init__(self) -> None:
        self.virtual = 0.0
        """The start tag of the request served last: where a newly active client starts."""
        self.queued: dict[str, int] = {}  # units queued per client
        self._finish: dict[str, float] = {}  # the tag of each client's newest request

    def weight(self, client: str) -> float:
        return self.weights.get(client, 1.0)

    @property
    def contended(self) -> bool:
        """More than one client is queued: only then does tag order differ from arrival."""
        return len(self.queued) > 1

    def tag(self, client: str, units: int) -> float:
        """Queue ``units`` of ``client``: the virtual finish tag that orders the request."""
        start = max(self.virtual, self._finish.get(client, 0.0))
        finish = start + units / self.weight(client)
        self._finish[client] = finish
        self.queued[client] = self.queued.get(client, 0) + units
        return finish

    def left(self, client: str, units: int, tag: float, *, served: bool = True) -> None:
        """A request left the queue: served (taken into a batch), or refused there."""
        if served:
            self.virtual = max(self.virtual, tag - units / self.weight(client))
        remaining = self.queued.get(client, 0) - units
        if remaining > 0:
            self.queued[client] = remaining
            return
        self.queued.pop(client, None)  # idle: its finish tag still counts what it just had
        if len(self._finish) > MAX_IDLE_TAGS:  # forget those the virtual time has passed
            self._finish = {
                c: tag for c, tag in self._finish.items() if c in self.queued or tag > self.virtual
            }

    def light(self, client: str, units: int, backlog: int) -> bool:
        """Whether the request of ``units`` just tagged is all ``client`` has queued while
        another client holds more than ``backlog`` units: a light client behind a heavy one."""
        return (
            self.contended
            and self.queued.get(client, 0) == units
            and any(q > backlog for c, q in self.queued.items() if c != client)
        )

    def clear(self) -> None:
        self.queued.clear()
        self._finish.clear()

    def ahead(self, client: str, units: int) -> float:
        """Units served before a new request of ``units`` ends, in tag order: the client's own
        backlog and request, and every other client's backlog up to the same virtual amount."""
        mine = self.queued.get(client, 0) + units
        per_weight = mine / self.weight(client)
        return mine + sum(
            min(queued, per_weight * self.weight(other))
            for other, queued in self.queued.items()
            if other != client
        )

    def share(self, client: str, capacity: int, arriving: str | None = None) -> float:
        """The client's share of ``capacity`` units among the queued clients, itself and the
        ``arriving`` one."""
        active = {*self.queued, client, *([] if arriving is None else [arriving])}
        return capacity * self.weight(client) / sum(self.weight(c) for c in active)

    def most_over_share(self, client: str, units: int, capacity: int) -> str | None:
        """For a full queue: the client most over its share of ``capacity``, whose newest request
        the arriving one may replace, if the arrival keeps its own client within its share."""
        if self.queued.get(client, 0) + units > self.share(client, capacity):
            return None
        others = [c for c in self.queued if c != client]
        if not others:
            return None
        victim = max(others, key=lambda c: self.queued[c] / self.weight(c))
        over = self.queued[victim] > self.share(victim, capacity, arriving=client)
        return victim if over else None
