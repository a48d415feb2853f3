"""Which loaded models to unload so that another fits in the memory budget: the least recently
used ones that have no request in flight (a busy model is never unloaded under its requests).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Resident:
    """A loaded model as the budget sees it."""

    name: str
    size: int  # bytes, its workers' measured resident memory
    last_used: float  # when a request last reached it (any clock, only compared)
    busy: bool  # requests in flight, or waiting for it to load
    pinned: bool = False  # served with --model: never unloaded


def to_evict(residents: list[Resident], need: int, budget: int) -> list[str] | None:
    """The models to unload, least recently used first, so that ``need`` more bytes fit in
    ``budget``: ``[]`` when they fit already, None when they cannot fit now (busy or pinned
    models hold too much)."""
    used = sum(r.size for r in residents)
    if used + need <= budget:
        return []
    chosen: list[str] = []
    for resident in sorted(residents, key=lambda r: r.last_used):
        if resident.busy or resident.pinned:
            continue
        chosen.append(resident.name)
        used -= resident.size
        if used + need <= budget:
            return chosen
    return None
