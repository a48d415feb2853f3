"""Per-client rate limits: a token bucket per key (the API key, else the client address).

Buckets refill lazily on use, so an idle client costs nothing; the table is bounded and forgets
the least recently seen key first.
"""

from __future__ import annotations

from collections import OrderedDict

from dlproxy.clock import Clock, MonotonicClock
from dlproxy.errors import RateLimited


class RateLimiter:
    def __init__(
        self, rate: float, burst: float, clock: Clock | None = None, max_keys: int = 100_000
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate must be > 0 and burst >= 1 (got rate={rate}, burst={burst})")
        self.rate = rate
        self.burst = burst
        self.clock = clock or MonotonicClock()
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def check(self, key: str) -> None:
        """Take one token for ``key``; raise RateLimited (429) when its bucket is empty."""
        now = self.clock.now()
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            raise RateLimited(
                f"rate limit of {self.rate:g} requests/s exceeded for this client",
                retry_after=(1 - tokens) / self.rate,
            )
        self._buckets[key] = (tokens - 1, now)
        if len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
