"""W-TinyLFU (Einziger, Friedman and Manes, 2017), as in Caffeine: admit by frequency.

The cache is split into a small LRU *window* (about 1% of the entries) and a *main* area run as
a segmented LRU (``probation`` 20%, ``protected`` 80%). Every key enters the window. When the
window is over its share, its least recent key (the *candidate*) contends with main's next victim
(probation's least recent key) and only the one the sketch has seen more often stays. So a key
read once cannot push out a key read often, which is what makes the policy resist scans, while
the window still lets a burst of new-but-repeated keys in.

Frequencies come from a count-min sketch over all recent accesses (not only cached keys), with
small saturating counters that are halved every ``SAMPLE_FACTOR x capacity`` accesses, so what
was popular long ago fades (aging). Every operation is O(1); the halving is O(sketch size) once
per sample period, which is amortised O(1).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

# Caffeine's settings. Longer sample periods, wider counters or a 90% protected segment gained
# at most 1.3 points on our Zipf traces and slow the aging down (docs/benchmarks.md).
WINDOW_SHARE = 0.01
PROTECTED_SHARE = 0.8
SAMPLE_FACTOR = 10
WIDTH_FACTOR = 4
COUNTER_MAX = 15

_MASK = (1 << 64) - 1
# Two odd 64-bit multipliers (golden ratio, Murmur3). hash() x the first, mod 2**64, spreads even
# small ints (whose hash is themselves) over 64 bits; x the second gives a 128-bit product whose
# upper bits depend on every bit. The four rows index with four disjoint windows of those upper
# bits: one hash() and two multiplications serve all rows.
_SPREAD = 0x9E3779B97F4A7C15
_MULTIPLIER = 0xFF51AFD7ED558CCD
_HALVE = bytes(i >> 1 for i in range(256))


class FrequencySketch:
    """A count-min sketch: four rows of byte counters in one bytearray, saturating at 15.

    Each row is ``WIDTH_FACTOR x capacity`` counters (16 x capacity in all, as Caffeine), rounded
    up to a power of two so that an index is a window of bits. ``increment`` uses conservative
    update (only the counters equal to the current estimate go up), which keeps collisions from
    inflating estimates.

    The rows are independent tables rather than Caffeine's one-cache-line block per key: we
    measured the blocked layout 15% faster per access at a million entries but up to 1 point
    lower in hit ratio (its rows share their colliding keys), and a hit saves far more than a
    microsecond.
    """

    __slots__ = ("_additions", "_mask", "_shifts", "_table", "_width", "sample_size")

    def __init__(self, capacity: int) -> None:
        width = 16
        while width < capacity * WIDTH_FACTOR:
            width *= 2
        bits = width.bit_length() - 1
        if 4 * bits > 128:
            raise ValueError(f"capacity {capacity} is too large for the sketch's 128-bit index.")
        self._width = width
        self._mask = width - 1
        self._shifts = tuple(128 - bits * row for row in range(1, 5))
        self._table = bytearray(4 * width)
        self._additions = 0
        self.sample_size = SAMPLE_FACTOR * max(capacity, 1)
        """Accesses between two halvings."""

    def _indexes(self, key: Hashable) -> tuple[int, int, int, int]:
        product = (hash(key) * _SPREAD & _MASK) * _MULTIPLIER
        s0, s1, s2, s3 = self._shifts
        m, w = self._mask, self._width
        return (
            product >> s0,
            w + (product >> s1 & m),
            2 * w + (product >> s2 & m),
            3 * w + (product >> s3 & m),
        )

    def estimate(self, key: Hashable) -> int:
        """How often ``key`` was seen recently (an over-estimate only through collisions)."""
        t = self._table
        a, b, c, d = self._indexes(key)
        return min(t[a], t[b], t[c], t[d])

    def increment(self, key: Hashable) -> None:
        t = self._table
        a, b, c, d = self._indexes(key)
        ta, tb, tc, td = t[a], t[b], t[c], t[d]
        low = min(ta, tb, tc, td)
        if low < COUNTER_MAX:
            # Unrolled: this runs on every access.
            if ta == low:
                t[a] = low + 1
            if tb == low:
                t[b] = low + 1
            if tc == low:
                t[c] = low + 1
            if td == low:
                t[d] = low + 1
        self._additions += 1
        if self._additions >= self.sample_size:
            self.halve()

    def halve(self) -> None:
        """Age every counter: one C-speed pass over the table."""
        self._table = self._table.translate(_HALVE)
        self._additions = 0


class TinyLFU:
    """Window LRU + segmented main LRU, with count-min-sketch admission between them."""

    __slots__ = (
        "_main_max",
        "_probation",
        "_protected",
        "_protected_max",
        "_window",
        "_window_max",
        "sketch",
    )

    def __init__(self, capacity: int) -> None:
        self._window_max = max(1, round(capacity * WINDOW_SHARE))
        self._main_max = max(0, capacity - self._window_max)
        self._protected_max = int(self._main_max * PROTECTED_SHARE)
        self._window: OrderedDict[Hashable, None] = OrderedDict()
        self._probation: OrderedDict[Hashable, None] = OrderedDict()
        self._protected: OrderedDict[Hashable, None] = OrderedDict()
        self.sketch = FrequencySketch(capacity)

    def record_insert(self, key: Hashable) -> None:
        self.sketch.increment(key)
        window = self._window
        window[key] = None
        # While main has room (filling up, or after deletes) the window's overflow moves there
        # freely; once it is full, the overflow waits for evict() to hold the contest.
        if len(window) > self._window_max and (
            len(self._probation) + len(self._protected) < self._main_max
        ):
            self._probation[window.popitem(last=False)[0]] = None

    def record_hit(self, key: Hashable) -> None:
        self.sketch.increment(key)
        protected = self._protected
        if key in protected:
            protected.move_to_end(key)
        elif key in self._probation:
            del self._probation[key]
            protected[key] = None
            if len(protected) > self._protected_max:
                self._probation[protected.popitem(last=False)[0]] = None
        else:
            self._window.move_to_end(key)

    def record_remove(self, key: Hashable) -> None:
        for segment in (self._window, self._probation, self._protected):
            if key in segment:
                del segment[key]
                return
        raise KeyError(key)

    def evict(self) -> Hashable:
        window = self._window
        main = self._probation or self._protected
        if window and (len(window) > self._window_max or not main):
            candidate = window.popitem(last=False)[0]
            if not main:
                return candidate
            victim = next(iter(main))
            if self.sketch.estimate(candidate) > self.sketch.estimate(victim):
                del main[victim]
                self._probation[candidate] = None
                return victim
            return candidate
        # The window is within its share (a byte bound or a delete got us here): take from main.
        return main.popitem(last=False)[0]

    def segment_of(self, key: Hashable) -> str | None:
        """``"window"``, ``"probation"``, ``"protected"`` or None (for tests and inspection)."""
        for name, segment in (
            ("window", self._window),
            ("probation", self._probation),
            ("protected", self._protected),
        ):
            if key in segment:
                return name
        return None
