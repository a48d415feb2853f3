"""Hit ratio of every in-memory cache policy on Zipf traces, with and without a one-off scan.

Each access is a read, and a put (size 1) on a miss: what the gateway does with a result. A
scan is a one-off pass over fresh keys, each read once (a batch job going through a data set),
added to the middle of the trace in one of two shapes:

- ``run``: one contiguous run, while the other traffic pauses. Every policy misses all of it;
  what differs is how much of the popular set a policy still holds afterwards.
- ``interleaved``: one scan key after every two ordinary accesses, while the traffic goes on.
  Here a policy that lets scan keys in also loses hits on the ordinary traffic during the scan.

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
SCANS = ("none", "run", "interleaved")
BOUND = "top-k bound"


@dataclass(frozen=True)
class Trace:
    """A trace is rebuilt from this recipe in each worker process (cheaper than pickling it)."""

    exponent: float
    scan: str
    keys: int
    accesses: int
    scan_share: float
    seed: int

    @property
    def label(self) -> str:
        return f"zipf {self.exponent}" + ("" if self.scan == "none" else f" + {self.scan} scan")

    def build(self) -> tuple[list[bytes], list[bytes]]:
        """The trace, and the key space from the most popular key down."""
        rng = np.random.default_rng(self.seed)
        weights = np.arange(1, self.keys + 1, dtype=np.float64) ** -self.exponent
        ranks = rng.choice(self.keys, size=self.accesses, p=weights / weights.sum())
        # Popularity rank -> key id through a fixed permutation, so hot keys are not 0, 1, 2...
        by_rank = rng.permutation(self.keys)
        names = [b"key-%d" % i for i in range(self.keys)]
        trace = [names[i] for i in by_rank[ranks].tolist()]
        popular = [names[i] for i in by_rank.tolist()]
        fresh = [b"scan-%d" % i for i in range(int(self.accesses * self.scan_share))]
        if self.scan == "run":
            middle = len(trace) // 2
            trace[middle:middle] = fresh
        elif self.scan == "interleaved":
            fresh = fresh[: len(trace) // 2]
            start = (len(trace) - 2 * len(fresh)) // 2
            pairs = trace[start : start + 2 * len(fresh)]
            trace[start : start + 2 * len(fresh)] = [
                key for keys in zip(pairs[0::2], pairs[1::2], fresh, strict=True) for key in keys
            ]
        return trace, popular


def hit_ratio(trace: list[bytes], policy: str, capacity: int) -> float:
    cache = MemoryCache(policy, max_entries=capacity)
    get, put = cache.get_nowait, cache.put_nowait
    for key in trace:
        if get(key) is None:
            put(key, True, 1)
    return cache.statistics().hits / len(trace)


def top_k_bound(trace: list[bytes], popular: list[bytes], capacity: int) -> float:
    """The hit ratio of a cache that held the ``capacity`` most popular keys from the start and
    nothing else: for independent accesses, no policy that doesn't see the future does better
    on average, so it bounds what any of the policies could gain on a row."""
    top = set(popular[:capacity])
    return sum(key in top for key in trace) / len(trace)


def run_row(trace: Trace, capacity: int, policies: list[str]) -> dict[str, float]:
    keys, popular = trace.build()
    ratios = {policy: hit_ratio(keys, policy, capacity) for policy in policies}
    return ratios | {BOUND: top_k_bound(keys, popular, capacity)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=100_000, help="size of the key space")
    parser.add_argument("--accesses", type=int, default=1_000_000, help="Zipf accesses per trace")
    parser.add_argument("--scan-share", type=float, default=0.2, help="scan length / accesses")
    parser.add_argument(
        "--scans",
        default=",".join(SCANS),
        help=f"comma-separated trace shapes, from {', '.join(SCANS)}",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2, help="worker processes")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    args = parser.parse_args()

    policies = list(POLICIES)
    scans = args.scans.split(",")
    if unknown := set(scans) - set(SCANS):
        parser.error(f"unknown scan shape(s) {sorted(unknown)}; choose from {', '.join(SCANS)}")
    rows = [
        (Trace(s, scan, args.keys, args.accesses, args.scan_share, args.seed), share)
        for s in EXPONENTS
        for scan in scans
        for share in SIZE_SHARES
    ]
    started = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = [
            pool.submit(run_row, trace, int(args.keys * share), policies) for trace, share in rows
        ]
        results = [f.result() for f in futures]
    elapsed = time.perf_counter() - started

    print(f"| trace | cache size | {' | '.join(policies)} | {BOUND} |")
    print(f"|---|---|{'---:|' * (len(policies) + 1)}")
    records = []
    for (trace, share), ratios in zip(rows, results, strict=True):
        best = max(ratios[p] for p in policies)
        cells = [
            f"**{100 * r:.1f}**" if r == best else f"{100 * r:.1f}"
            for r in (ratios[p] for p in policies)
        ]
        bound = f"{100 * ratios[BOUND]:.1f}"
        print(f"| {trace.label} | {share:.0%} | {' | '.join(cells)} | {bound} |")
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
