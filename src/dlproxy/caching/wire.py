"""What every shared (networked) cache level has in common, written once: the value format on the
wire, the circuit breaker that keeps a dead server off the hot path, and ``SharedCache``, the guard
around every call to the server. ``redis.py`` and ``memcached.py`` only move bytes.

A shared level never raises to its caller: a server that is down, slow or flapping costs at most
one short timeout, then the breaker skips it for a growing back-off; the answer is a miss.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
import numpy as np

from dlproxy.clock import Clock, MonotonicClock
from dlproxy.protocol import WireTensor, from_wire, to_wire

log = logging.getLogger("dlproxy.cache")
_MONOTONIC = MonotonicClock()

Row = dict[str, np.ndarray]

FORMAT = b"\x01"
"""The first byte of every stored value. A value with another first byte was written by another
format (older or newer dlproxy): it is a miss, never a crash. Change it with the layout."""

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(dict[str, WireTensor])


def encode_row(row: Row) -> bytes:
    """One item's outputs (name -> 1-row array) as compact msgpack behind the format byte."""
    return FORMAT + _encoder.encode({name: to_wire(array) for name, array in row.items()})


def decode_row(data: bytes) -> Row | None:
    """The row stored by ``encode_row``, or None if the value is from another format or corrupt.

    Numeric arrays are read-only views of the value (no copy); cached rows are shared anyway.
    """
    if data[:1] != FORMAT:
        return None
    try:
        tensors = _decoder.decode(memoryview(data)[1:])
        return {name: from_wire(tensor) for name, tensor in tensors.items()}
    except (msgspec.DecodeError, ValueError, KeyError, TypeError):
        return None


SLOW_CALLS = 5
"""Calls in a row slower than ``SLOW_SHARE`` of the timeout that open the breaker."""
SLOW_SHARE = 0.8
"""A call slower than this share of the timeout is slow (less would count a busy event loop's
own delays against a healthy server)."""


class Breaker:
    """Closed (calls go through) until a failure; then open: calls are skipped for a back-off that
    doubles with every failed retry, from ``first`` up to ``longest`` seconds. When it runs out,
    one caller is let through as a probe (the others keep skipping); its success closes the breaker.

    So a dead server costs nothing per request, and a server that comes back is used again within
    ``longest`` seconds, with no reconnect logic of our own (the client libraries reconnect).
    """

    def __init__(self, first: float = 0.5, longest: float = 5.0, clock: Clock = _MONOTONIC) -> None:
        if not 0 < first <= longest:
            raise ValueError(f"need 0 < first <= longest (got first={first}, longest={longest})")
        self._first = first
        self._longest = longest
        self._clock = clock
        self._failures = 0
        self._retry_at = 0.0
        self._probing = False

    @property
    def closed(self) -> bool:
        return self._failures == 0

    @property
    def available(self) -> bool:
        """Whether a call now would go through (without claiming the probe)."""
        return self._failures == 0 or self._clock.now() >= self._retry_at

    def allows(self) -> bool:
        """Whether to call the server now; once the back-off has run out, True for one probe."""
        if self._failures == 0:
            return True
        now = self._clock.now()
        if now < self._retry_at:
            return False
        self._retry_at = now + self._backoff()
        self._probing = True
        return True

    def succeeded(self) -> None:
        self._failures = 0
        self._probing = False

    def failed(self) -> None:
        """Open the breaker. A failure of a call started before it opened (many calls in flight
        when a server dies) does not lengthen the back-off: only a failed probe does."""
        if self._failures and not self._probing:
            return
        self._failures += 1
        self._probing = False
        self._retry_at = self._clock.now() + self._backoff()

    def _backoff(self) -> float:
        return float(min(self._longest, self._first * 2 ** (self._failures - 1)))


@dataclass(frozen=True, slots=True)
class SharedStatistics:
    """A snapshot of a shared level's counters."""

    hits: int
    misses: int
    """Keys looked up and not found (including corrupt values and skipped lookups)."""
    corrupt: int
    """Values found but unreadable (another format, or damaged): answered as misses."""
    errors: int
    """Calls that failed or timed out."""
    slow: int
    """Times the breaker opened because calls answered slowly (near the timeout)."""
    skipped: int
    """Calls not made because the breaker was open."""
    writes: int
    """Entries stored."""
    write_batches: int
    """Round trips that stored them (one pipelined batch each)."""
    available: bool
    """Whether the breaker lets calls through now."""


class SharedCache:
    """A networked cache level of rows, guarded: batched lookups and stores, each bounded by
    ``timeout`` seconds, skipped while the breaker is open, and never raising.

    Subclasses implement the transport: ``_fetch``, ``_store``, ``_remove``, ``_disconnect``, and
    ``_server_key`` (the key as the server stores it, with ``prefix``).
    """

    name = "shared"

    def __init__(
        self,
        *,
        timeout: float = 0.05,
        ttl: float | None = None,
        prefix: bytes = b"dlp:",
        breaker: Breaker | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive (got {timeout}).")
        if ttl is not None and ttl <= 0:
            raise ValueError(f"ttl must be positive or None (got {ttl}).")
        self.timeout = timeout
        self.ttl = ttl
        self.prefix = prefix
        self._breaker = breaker or Breaker()
        self._hits = 0
        self._misses = 0
        self._corrupt = 0
        self._errors = 0
        self._skipped = 0
        self._writes = 0
        self._write_batches = 0
        self._slow_streak = 0
        self._slow = 0

    @property
    def available(self) -> bool:
        """Whether a call now would reach the server (the breaker is not holding it off)."""
        return self._breaker.available

    async def get_many(self, keys: Sequence[bytes]) -> list[Row | None]:
        """The row for each key, or None: a miss, a corrupt value, or the server unavailable.
        One round trip (duplicate keys are asked once)."""
        found: list[Row | None] = [None] * len(keys)
        if not keys:
            return found
        if not self._breaker.allows():
            self._skipped += 1
            self._misses += len(keys)
            return found
        unique = list(dict.fromkeys(keys))
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout):
                values = await self._fetch([self._server_key(key) for key in unique])
        except Exception as exc:
            await self._failed("lookup", exc)
            self._misses += len(keys)
            return found
        self._succeeded(time.monotonic() - started)
        rows: dict[bytes, Row | None] = {}
        for key, value in zip(unique, values, strict=True):
            row = None if value is None else decode_row(value)
            if value is not None and row is None:
                self._corrupt += 1
            rows[key] = row
        for index, key in enumerate(keys):
            found[index] = row = rows[key]
            if row is None:
                self._misses += 1
            else:
                self._hits += 1
        return found

    async def put_many(
        self,
        entries: Sequence[tuple[bytes, Row]],
        *,
        time_limit: float | None = None,
        force: bool = False,
    ) -> bool:
        """Store the entries in one pipelined round trip, within ``time_limit`` seconds (default:
        the level's timeout). False if they were not stored: the server failed, or the breaker
        is open and ``force`` is not set (a final flush sets it)."""
        if not entries:
            return True
        if not force and not self._breaker.allows():
            self._skipped += 1
            return False
        items = [(self._server_key(key), encode_row(row)) for key, row in entries]
        started = time.monotonic()
        try:
            async with asyncio.timeout(time_limit or self.timeout):
                await self._store(items)
        except Exception as exc:
            await self._failed("store", exc)
            return False
        # A flush's own time limit is longer than a lookup's: only a lookup-sized call is timed.
        self._succeeded(time.monotonic() - started if time_limit is None else 0.0)
        self._writes += len(items)
        self._write_batches += 1
        return True

    async def get(self, key: bytes) -> Row | None:
        return (await self.get_many([key]))[0]

    async def put(self, key: bytes, value: Row, size: int = 0, ttl: float | None = None) -> None:
        """The ``Cache`` interface; the level's own ``ttl`` applies (``size`` and ``ttl`` unused)."""
        await self.put_many([(key, value)])

    async def delete(self, key: bytes) -> None:
        if not self._breaker.allows():
            self._skipped += 1
            return
        try:
            async with asyncio.timeout(self.timeout):
                await self._remove(self._server_key(key))
        except Exception as exc:
            await self._failed("delete", exc)
        else:
            self._succeeded()

    def statistics(self) -> SharedStatistics:
        return SharedStatistics(
            hits=self._hits,
            misses=self._misses,
            corrupt=self._corrupt,
            errors=self._errors,
            slow=self._slow,
            skipped=self._skipped,
            writes=self._writes,
            write_batches=self._write_batches,
            available=self._breaker.available,
        )

    async def close(self) -> None:
        """Close the connections (errors are logged: shutdown goes on)."""
        try:
            await self._disconnect()
        except Exception as exc:
            log.warning("closing the %s cache failed: %r", self.name, exc)

    def _succeeded(self, took: float = 0.0) -> None:
        """A call answered; a streak of slow answers (near the timeout) opens the breaker as an
        error would: a server just under the timeout would otherwise tax every request."""
        if took > self.timeout * SLOW_SHARE:
            self._slow_streak += 1
            if self._slow_streak >= SLOW_CALLS:
                self._slow += 1
                if self._breaker.closed:
                    log.warning(
                        "%s cache answers slowly (%.0f ms): answering misses, retrying after a "
                        "back-off",
                        self.name,
                        took * 1000,
                    )
                self._breaker.failed()
                return
        else:
            self._slow_streak = 0
        if not self._breaker.closed:
            log.info("%s cache answers again", self.name)
        self._breaker.succeeded()

    async def _failed(self, what: str, exc: Exception) -> None:
        self._errors += 1
        was_closed = self._breaker.closed
        self._breaker.failed()
        await self._after_error(exc)
        if was_closed:  # log the transition, not every skipped request
            log.warning(
                "%s cache %s failed (%r): answering misses, retrying after a back-off",
                self.name,
                what,
                exc,
            )

    # The transport, implemented by each server's module.

    def _server_key(self, key: bytes) -> bytes:
        return self.prefix + key

    async def _fetch(self, keys: list[bytes]) -> Sequence[bytes | None]:
        raise NotImplementedError

    async def _store(self, items: list[tuple[bytes, bytes]]) -> None:
        raise NotImplementedError

    async def _remove(self, key: bytes) -> None:
        raise NotImplementedError

    async def _disconnect(self) -> None:
        raise NotImplementedError

    async def _after_error(self, exc: Exception) -> None:
        """Called after a failed or timed-out call: drop connections that may be mid-reply."""
