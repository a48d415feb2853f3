"""L1 (in-process) and optionally L2 (shared: Redis, Memcached) behind one batched lookup/store.

Values are one item's outputs (output name -> 1-row array). A lookup checks L1, then asks L2 once
for all the L1 misses; L2 hits are promoted into L1. How a store reaches L2 is the write policy:

- ``through``: L1 at once, then the caller awaits the L2 write (stored in both before answering).
- ``back``: L1 and a dirty buffer at once; a background task owned by the cache writes the buffer
  to L2 in pipelined batches (on an interval, and sooner once it passes a threshold). ``close``
  (and ``begin_close``, at the start of a shutdown) writes everything still dirty: a graceful
  shutdown loses nothing.
- ``combining``: L1 at once; writes arriving within a short window go to L2 as one pipelined
  multi-set, and each caller awaits that write (still stored before answering, in fewer trips).

L2 never raises here: a failing server answers misses and refuses writes (see ``wire.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from dlproxy.caching.base import MemoryCache
from dlproxy.caching.wire import SharedCache

log = logging.getLogger("dlproxy.cache")

Row = dict[str, np.ndarray]
WRITE_POLICIES = ("through", "back", "combining")


def row_size(row: Row) -> int:
    return sum(array.nbytes for array in row.values()) + 64 * len(row)


class TieredCache:
    """One lookup/store over L1 and L2, with the write policy chosen by name.

    Write-back bounds: at most ``max_dirty`` entries wait for L2. A store never waits for L2:
    when the buffer is full (L2 slower than traffic, or unavailable with its breaker open) the
    oldest dirty entries are dropped (counted in ``dropped``; they stay in L1), so a slow or dead
    cache server never blocks a request.
    """

    def __init__(
        self,
        l1: MemoryCache | None,
        l2: SharedCache | None = None,
        write_policy: str = "through",
        *,
        max_dirty: int = 10_000,
        flush_interval: float = 0.1,
        flush_batch: int = 256,
        flush_timeout: float = 1.0,
        combine_window: float = 0.002,
        close_timeout: float = 10.0,
    ) -> None:
        if l1 is None and l2 is None:
            raise ValueError("a tiered cache needs at least one level")
        if write_policy not in WRITE_POLICIES:
            raise ValueError(
                f"Unknown write policy '{write_policy}'; choose one of: {', '.join(WRITE_POLICIES)}."
            )
        if max_dirty < 1 or flush_batch < 1:
            raise ValueError(
                f"max_dirty and flush_batch must be at least 1 (got {max_dirty}, {flush_batch})."
            )
        self.l1 = l1
        self.l2 = l2
        self.write_policy = write_policy
        self._max_dirty = max_dirty
        self._flush_interval = flush_interval
        self._flush_batch = flush_batch
        self._flush_timeout = flush_timeout
        self._combine_window = combine_window
        self._close_timeout = close_timeout
        # write-back
        self._dirty: dict[bytes, Row] = {}
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._flushed = 0
        self._dropped = 0
        # combining
        self._window: dict[bytes, Row] = {}
        self._window_done: asyncio.Future[None] | None = None
        self._combiners: set[asyncio.Task[None]] = set()
        self._combined_batches = 0
        self._combined_entries = 0
        self._closing = False
        self._early: asyncio.Task[None] | None = None  # the flush begun by ``begin_close``
        self.misfits = 0  # L2 rows that did not fit the model asking (answered as misses)

    async def get_many(
        self, keys: list[bytes], fits: Callable[[Row], bool] | None = None
    ) -> list[tuple[Row | None, str]]:
        """For each key: (row, level) with level "l1" or "l2", or (None, "miss").

        At most one L2 round trip, for the keys L1 does not hold. An L2 row that does not
        ``fit`` (another gateway's model wrote it, or it was damaged) is a miss, never promoted.
        """
        found: list[tuple[Row | None, str]] = [(None, "miss")] * len(keys)
        missing: list[int] = []
        for index, key in enumerate(keys):
            row = self.l1.get_nowait(key) if self.l1 is not None else None
            if row is None:
                row = self._dirty.get(key)  # not yet in L2, maybe already evicted from L1
            if row is None:
                missing.append(index)
            else:
                found[index] = (row, "l1")
        if self.l2 is None or not missing:
            return found
        rows = await self.l2.get_many([keys[index] for index in missing])
        for index, row in zip(missing, rows, strict=True):
            if row is not None and fits is not None and not fits(row):
                self.misfits += 1
                row = None
            if row is not None:
                found[index] = (row, "l2")
                if self.l1 is not None:
                    self.l1.put_nowait(keys[index], row, row_size(row))
        return found

    async def put_many(self, entries: list[tuple[bytes, Row]]) -> None:
        """Store in L1 now, and in L2 as the write policy says. Never raises for L2's sake."""
        if self.l1 is not None:
            for key, row in entries:
                self.l1.put_nowait(key, row, row_size(row))
        if self.l2 is None or not entries:
            return
        if self._closing or self.write_policy == "through":
            await self.l2.put_many(entries)
        elif self.write_policy == "back":
            await self._put_back(entries)
        else:
            await self._put_combined(entries)

    # write-back

    async def _put_back(self, entries: list[tuple[bytes, Row]]) -> None:
        """Buffer the entries for the flusher and return at once: a request never waits on L2.
        Past ``max_dirty`` the oldest are dropped (they stay in L1)."""
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_loop(), name="cache write-back")
        for key, row in entries:
            self._dirty[key] = row
        if len(self._dirty) >= self._flush_batch:
            self._wake.set()
        self._trim()

    async def _flush_loop(self) -> None:
        """Flush on the interval, or sooner when woken; after a refused flush, wait it out.
        Runs until ``close`` cancels it (a batch cut off in flight goes back into the buffer)."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._flush_interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                if not await self._flush_dirty(force=False):
                    await asyncio.sleep(self._flush_interval)
            except Exception:  # never stop flushing over one bad batch
                log.exception("cache write-back flush failed")

    async def _flush_dirty(self, *, force: bool) -> bool:
        """Write dirty entries to L2, oldest first, one pipelined batch at a time, until none is
        left. False if L2 refused a batch: it goes back into the buffer (unless rewritten since)."""
        assert self.l2 is not None
        while self._dirty:
            keys = list(itertools.islice(self._dirty, self._flush_batch))
            batch = [(key, self._dirty.pop(key)) for key in keys]
            stored = False
            try:
                stored = await self.l2.put_many(batch, time_limit=self._flush_timeout, force=force)
            finally:
                if stored:
                    self._flushed += len(batch)
                else:  # refused, or cancelled in flight: keep it (a newer value wins)
                    for key, row in batch:
                        self._dirty.setdefault(key, row)
                    self._trim()
            if not stored:
                return False
        return True

    def _trim(self) -> None:
        """Drop the oldest dirty entries beyond the bound (L2 is not taking them)."""
        excess = len(self._dirty) - self._max_dirty
        if excess > 0:
            for key in list(itertools.islice(self._dirty, excess)):
                del self._dirty[key]
            self._dropped += excess

    # combining

    async def _put_combined(self, entries: list[tuple[bytes, Row]]) -> None:
        for key, row in entries:
            self._window[key] = row
        done = self._window_done
        if done is None:
            done = self._window_done = asyncio.get_running_loop().create_future()
            task = asyncio.create_task(self._combine(done), name="cache write combining")
            self._combiners.add(task)
            task.add_done_callback(self._combiners.discard)
        await asyncio.shield(done)  # a caller that gives up does not cancel the others' write

    async def _combine(self, done: asyncio.Future[None]) -> None:
        """After the window, write everything it gathered as one pipelined multi-set."""
        assert self.l2 is not None
        try:
            await asyncio.sleep(self._combine_window)
            batch, self._window, self._window_done = list(self._window.items()), {}, None
            if await self.l2.put_many(batch):
                self._combined_batches += 1
                self._combined_entries += len(batch)
        finally:
            if self._window_done is done:  # cancelled during the window
                self._window_done = None
            if not done.done():
                done.set_result(None)

    def statistics(self) -> dict[str, Any]:
        """Per level ("l1", "l2"; None if not configured), as ``metrics.py`` reads them. The L2
        record adds the write policy's counters: ``pending`` (dirty write-back entries and open
        combining windows), ``flushed`` (write-back entries written), ``dropped`` (write-back
        entries given up while L2 was unavailable; they stay in L1), ``combined_batches`` and
        ``combined_entries`` (combining windows written, one pipelined multi-set each)."""
        l2: dict[str, Any] | None = None
        if self.l2 is not None:
            l2 = {
                **dataclasses.asdict(self.l2.statistics()),
                "pending": len(self._dirty) + len(self._window),
                "flushed": self._flushed,
                "dropped": self._dropped,
                "misfits": self.misfits,
                "combined_batches": self._combined_batches,
                "combined_entries": self._combined_entries,
            }
        return {"l1": self.l1.statistics() if self.l1 is not None else None, "l2": l2}

    def begin_close(self) -> None:
        """At the start of a shutdown: from now on stores go straight to L2, and what is dirty
        is written now, while the instances drain, not after (a supervisor's kill may come)."""
        if self._closing:
            return
        self._closing = True
        if self.l2 is not None and (self._dirty or self._combiners or self._flusher):
            self._early = asyncio.create_task(self._finish_writes(), name="cache final flush")

    async def close(self) -> None:
        """Write everything pending to L2 (dirty entries, open windows), then close connections.

        Called once, at shutdown, after the instances are drained (no more stores). The final
        flush tries L2 even if its breaker is open, within ``close_timeout`` seconds in all.
        """
        self.begin_close()
        if self.l2 is None:
            return
        try:
            async with asyncio.timeout(self._close_timeout):
                if self._early is not None:
                    await self._early
                await self._finish_writes()
        except TimeoutError:
            pass
        if self._dirty:
            log.warning("cache: %d write-back entries could not reach L2", len(self._dirty))
            self._dropped += len(self._dirty)
            self._dirty.clear()
        await self.l2.close()

    async def _finish_writes(self) -> None:
        if self._combiners:
            await asyncio.gather(*self._combiners, return_exceptions=True)
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.wait({self._flusher})
        with contextlib.suppress(Exception):  # logged by the level; close counts what is left
            await self._flush_dirty(force=True)
