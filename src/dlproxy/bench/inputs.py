"""Where a load test's sentences come from: ``unique``, ``zipf:S[:K]`` or ``file:PATH``.

The kind of input decides what a cache can do for the server, so it is a choice of the benchmark:

- ``unique``: no sentence repeats, so every request is a cache miss. The real sentences of
  ``dlproxy.models.builtin.corpus`` are cycled (in an order shuffled by the seed), each with one
  made-up counter word appended; the word encodes the seed and the cycle, so two runs with different
  seeds share no sentence either (a server's cache stays cold across runs).
- ``zipf:S[:K]``: a pool of ``K`` distinct sentences (default 1000), drawn with probability
  proportional to ``1 / rank**S``: the popularity skew of real traffic, where caching pays.
- ``file:PATH``: one input per line (blank lines skipped), cycled in file order.

Sources hand out sentences in blocks (``take``) so the load generator can build request bodies
before the timed run instead of per request.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Protocol

import numpy as np

DEFAULT_ZIPF_POOL = 1000

# Counter words are pronounceable syllables; "x" is left out so that it can separate the seed part
# from the cycle part and keep every word uniquely decodable.
_SYLLABLES: tuple[str, ...] = tuple(c + v for c, v in itertools.product("bdfgklmnprstvzch", "aeio"))


class InputSource(Protocol):
    """A deterministic, endless sequence of sentences."""

    @property
    def description(self) -> str:
        """How the source was asked for, e.g. ``zipf:1.1:1000``: recorded in the report."""
        ...

    def take(self, count: int) -> list[str]:
        """The next ``count`` sentences of the sequence."""
        ...


def counter_word(seed: int, index: int) -> str:
    """A made-up word naming ``(seed, index)``; distinct pairs give distinct words."""
    return _encode(seed) + "x" + _encode(index)


def _encode(number: int) -> str:
    base = len(_SYLLABLES)
    parts = [_SYLLABLES[number % base]]
    number //= base
    while number:
        parts.append(_SYLLABLES[number % base])
        number //= base
    return "".join(reversed(parts))


def _corpus() -> list[str]:
    # Imported here: the corpus module is only needed once a source is built.
    from dlproxy.models.builtin.corpus import sentences

    return sentences()


class UniqueInputs:
    """Every sentence different: corpus sentence + counter word, cycling through the corpus."""

    def __init__(self, seed: int = 0, base: list[str] | None = None) -> None:
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        sentences = list(dict.fromkeys(base if base is not None else _corpus()))
        if not sentences:
            raise ValueError("unique inputs need at least one base sentence")
        order = np.random.default_rng(seed).permutation(len(sentences))
        self._base = [sentences[i] for i in order]
        self._seed = seed
        self._next = 0

    @property
    def description(self) -> str:
        return "unique"

    def take(self, count: int) -> list[str]:
        # Appending one space-free word keeps sentences distinct: splitting at the last space gives
        # back the (distinct) base sentence and the (distinct per cycle) counter word.
        base, size, seed = self._base, len(self._base), self._seed
        start, self._next = self._next, self._next + count
        out: list[str] = []
        word, word_cycle = "", -1
        for index in range(start, start + count):
            cycle, position = divmod(index, size)
            if cycle != word_cycle:
                word, word_cycle = counter_word(seed, cycle), cycle
            out.append(f"{base[position]} {word}")
        return out


class ZipfInputs:
    """``pool`` distinct sentences drawn i.i.d. with ``P(rank r) ~ 1 / r**exponent``."""

    def __init__(self, exponent: float, pool: int = DEFAULT_ZIPF_POOL, seed: int = 0) -> None:
        if exponent < 0:
            raise ValueError(f"zipf exponent must be >= 0, got {exponent}")
        if pool < 1:
            raise ValueError(f"zipf pool size must be >= 1, got {pool}")
        self.exponent = exponent
        self.pool = UniqueInputs(seed).take(pool)  # pool[0] is rank 1, the most popular
        weights = 1.0 / np.arange(1, pool + 1, dtype=np.float64) ** exponent
        self.probabilities = weights / weights.sum()
        self._rng = np.random.default_rng(seed + 1)

    @property
    def description(self) -> str:
        return f"zipf:{self.exponent:g}:{len(self.pool)}"

    def take(self, count: int) -> list[str]:
        ranks = self._rng.choice(len(self.pool), size=count, p=self.probabilities)
        pool = self.pool
        return [pool[r] for r in ranks.tolist()]


class FileInputs:
    """The lines of a text file, in order, over and over."""

    def __init__(self, path: str | Path) -> None:
        self._path = str(path)
        text = Path(path).read_text(encoding="utf-8")
        self.lines = [line.strip() for line in text.splitlines() if line.strip()]
        if not self.lines:
            raise ValueError(f"input file {self._path!r} has no non-blank lines")
        self._next = 0

    @property
    def description(self) -> str:
        return f"file:{self._path}"

    def take(self, count: int) -> list[str]:
        lines, size = self.lines, len(self.lines)
        start, self._next = self._next, self._next + count
        return [lines[i % size] for i in range(start, start + count)]


def parse_inputs(spec: str, seed: int = 0) -> InputSource:
    """Build the source named by ``--inputs``: ``unique``, ``zipf:S[:K]`` or ``file:PATH``."""
    kind, _, rest = spec.partition(":")
    if kind == "unique" and not rest:
        return UniqueInputs(seed)
    if kind == "zipf" and rest:
        exponent, _, pool = rest.partition(":")
        try:
            return ZipfInputs(float(exponent), int(pool) if pool else DEFAULT_ZIPF_POOL, seed)
        except ValueError as exc:
            raise ValueError(f"--inputs {spec!r}: expected zipf:S or zipf:S:K ({exc})") from None
    if kind == "file" and rest:
        return FileInputs(rest)
    raise ValueError(f"--inputs {spec!r}: expected unique, zipf:S[:K] or file:PATH")
