"""Hit ratio of every in-memory cache policy on Zipf traces, with and without a one-off scan.

Each access is a read, and a put (size 1) on a miss: what the gateway does with a result. The
scan is a run of fresh keys, each read once, placed in the middle of the trace: a batch job
going through a data set once. Every policy misses all of the scan; what differs is how much of
the popular set it still holds afterwards.

    PYTHONPATH=src .venv/bin/python benchmarks/cache_hit_ratio.py --json cache_hit_ratio.json
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from dlproxy.caching.base import POLICIES, MemoryCache

EXPONENTS = (0.8, 1.0, 1.2)
SIZE_SHARES = (0.01, 0.10)


@dataclass(frozen=True)
class Trace:
    """A trace is rebuilt from this recipe in each worker process (cheaper than pickling it)."""

    exponent: float
    scan: bool
    keys: int
    accesses: int
    scan_share: float
    seed: int

    @property
    def label(self) -> str:
        return f"zipf {self.exponent}" + (" + scan" if self.scan else "")

    def build(self) -> list[bytes]:
        rng = np.random.default_rng(self.seed)
        weights = np.arange(1, self.keys + 1, dtype=np.float64) ** -self.exponent
        ranks = rng.choice(self.keys, size=self.accesses, p=weights / weights.sum())
        # Popularity rank -> key id through a fixed permutation, so hot keys are not 0, 1, 2...
        ids = rng.permutation(self.keys)[ranks]
        names = [b"key-%d" % i for i in range(self.keys)]
        trace = [names[i] for i in ids.tolist()]
        if self.scan:
            middle = len(trace) // 2
            fresh = [b"scan-%d" % i for i in range(int(self.accesses * self.scan_share))]
            trace[middle:middle] = fresh
        return trace


def hit_ratio(trace: list[bytes], policy: str, capacity: int) -> float:
    cache = MemoryCache(policy, max_entries=capacity)
    get, put = cache.get_nowait, cache.put_nowait
    for key in trace:
        if get(key) is None:
            put(key, True, 1)
    return cache.statistics().hits / len(trace)


def run_row(trace: Trace, capacity: int, policies: list[str]) -> dict[str, float]:
    keys = trace.build()
    return {policy: hit_ratio(keys, policy, capacity) for policy in policies}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=100_000, help="size of the key space")
    parser.add_argument("--accesses", type=int, default=1_000_000, help="Zipf accesses per trace")
    parser.add_argument("--scan-share", type=float, default=0.2, help="scan length / accesses")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2, help="worker processes")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    args = parser.parse_args()

    policies = list(POLICIES)
    rows = [
        (Trace(s, scan, args.keys, args.accesses, args.scan_share, args.seed), share)
        for s in EXPONENTS
        for scan in (False, True)
        for share in SIZE_SHARES
    ]
    started = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = [
            pool.submit(run_row, trace, int(args.keys * share), policies) for trace, share in rows
        ]
        results = [f.result() for f in futures]
    elapsed = time.perf_counter() - started

    print(f"| trace | cache size | {' | '.join(policies)} |")
    print(f"|---|---|{'---:|' * len(policies)}")
    records = []
    for (trace, share), ratios in zip(rows, results, strict=True):
        best = max(ratios.values())
        cells = [
            f"**{100 * r:.1f}**" if r == best else f"{100 * r:.1f}"
            for r in (ratios[p] for p in policies)
        ]
        print(f"| {trace.label} | {share:.0%} | {' | '.join(cells)} |")
        records.append(
            {
                "exponent": trace.exponent,
                "scan": trace.scan,
                "capacity": int(args.keys * share),
                "hit_ratio": ratios,
            }
        )
    print(f"\n{len(rows) * len(policies)} runs in {elapsed:.0f} s")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(
                {
                    "keys": args.keys,
                    "accesses": args.accesses,
                    "scan_accesses": int(args.accesses * args.scan_share),
                    "seed": args.seed,
                    "rows": records,
                },
                out,
                indent=2,
            )


if __name__ == "__main__":
    main()
