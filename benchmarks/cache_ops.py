"""Per-operation cost (ns/op) of each in-memory cache policy, at a million entries.

For each policy: fill a ``MemoryCache`` to its entry bound, then time ``get_nowait`` on present
keys (hit), on absent keys (miss) and ``put_nowait`` of new keys (each evicts one). Keys are
read in a random order, so the figures include the cache misses of a big table. As ``timeit``
does, the garbage collector is off while timing; each figure is the best of ``--repeat`` runs and
includes the Python loop around the call (the ``dict`` row shows that floor).

    PYTHONPATH=src .venv/bin/python benchmarks/cache_ops.py --json cache_ops.json
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import time
from collections.abc import Callable

from dlproxy.caching.base import POLICIES, MemoryCache


def per_op(loop: Callable[[list[bytes]], None], batches: list[list[bytes]]) -> float:
    """Best ns/op of ``loop`` over each batch of keys."""
    best = float("inf")
    for keys in batches:
        gc.disable()
        started = time.perf_counter_ns()
        loop(keys)
        elapsed = time.perf_counter_ns() - started
        gc.enable()
        best = min(best, elapsed / len(keys))
    return best


def measure(policy: str, entries: int, ops: int, repeat: int) -> dict[str, float]:
    cache = MemoryCache(policy, max_entries=entries)
    get, put = cache.get_nowait, cache.put_nowait
    present = [b"key-%d" % i for i in range(entries)]
    started = time.perf_counter_ns()
    for key in present:
        put(key, True, 1)
    fill = (time.perf_counter_ns() - started) / entries
    rng = random.Random(1)
    hits = [rng.sample(present, ops) for _ in range(repeat)]
    absent = [[b"absent-%d-%d" % (r, i) for i in range(ops)] for r in range(repeat)]
    fresh = [[b"fresh-%d-%d" % (r, i) for i in range(ops)] for r in range(repeat)]

    def get_all(keys: list[bytes]) -> None:
        for key in keys:
            get(key)

    def put_all(keys: list[bytes]) -> None:
        for key in keys:
            put(key, True, 1)

    result = {
        "fill": fill,
        "get_hit": per_op(get_all, hits),
        "get_miss": per_op(get_all, absent),
        "put_evict": per_op(put_all, fresh),
    }
    stats = cache.statistics()
    assert stats.entries == entries, stats
    assert stats.evictions + stats.rejections == ops * repeat, stats
    return result


def measure_dict(entries: int, ops: int, repeat: int) -> dict[str, float]:
    """The floor: a bare dict (no policy, no accounting) under the same loops."""
    table = {b"key-%d" % i: True for i in range(entries)}
    rng = random.Random(1)
    present = list(table)
    hits = [rng.sample(present, ops) for _ in range(repeat)]
    absent = [[b"absent-%d-%d" % (r, i) for i in range(ops)] for r in range(repeat)]
    get = table.get

    def get_all(keys: list[bytes]) -> None:
        for key in keys:
            get(key)

    return {"get_hit": per_op(get_all, hits), "get_miss": per_op(get_all, absent)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--ops", type=int, default=200_000, help="operations per timed run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    args = parser.parse_args()

    results: dict[str, dict[str, float]] = {}
    for policy in POLICIES:
        results[policy] = measure(policy, args.entries, args.ops, args.repeat)
        gc.collect()
    results["dict (floor)"] = measure_dict(args.entries, args.ops, args.repeat)

    print(f"ns/op at {args.entries:,} entries (best of {args.repeat} x {args.ops:,} ops)\n")
    print("| policy | get (hit) | get (miss) | put (evicts one) | fill (put, no eviction) |")
    print("|---|---:|---:|---:|---:|")
    for name, r in results.items():
        cells = [f"{r[k]:.0f}" if k in r else "-" for k in ("get_hit", "get_miss", "put_evict")]
        fill = f"{r['fill']:.0f}" if "fill" in r else "-"
        print(f"| {name} | {' | '.join(cells)} | {fill} |")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(
                {"entries": args.entries, "ops": args.ops, "ns_per_op": results}, out, indent=2
            )


if __name__ == "__main__":
    main()
