"""A live step in load on a real autoscaled gateway: how long until the new instance serves, the
p99 during the transition, and how long until the pool shrinks back.

    PYTHONPATH=src .venv/bin/python benchmarks/live_step.py [--policy queue_length] [--low 100]
        [--high 500] [--before 10] [--after 30] [--json OUT]

``dlproxy serve`` (minilm int8, 1 instance x 1 thread, ``--autoscale POLICY``, 1-2 instances,
SLO 100 ms) is loaded open loop (Poisson) at ``--low`` req/s, then at ``--high`` (more than one
1-thread instance serves), then not at all. A thread polls ``/admin/instances`` every 100 ms:
the step-to-serving time is from the start of the high load to the first poll that shows a second
instance ready with items computed. The transition p99 is over the requests that started in the
first 10 s after the step.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from dlproxy.bench import loadgen
from dlproxy.bench.inputs import UniqueInputs
from dlproxy.bench.report import Report, latency_ms

sys.path.insert(0, str(Path(__file__).parent))
from harness import Serving, get_json


def open_loop(url: str, rate: float, duration: float, seed: int) -> loadgen.Recording:
    spec = loadgen.LoadSpec(
        url=url, model="minilm", rate=rate, duration=duration, warmup=0.0, seed=seed
    )
    with asyncio.Runner(loop_factory=loadgen.event_loop_factory()) as runner:
        return runner.run(loadgen.run_load(spec, UniqueInputs(seed)))


class Watch:
    """Polls the instance list; remembers when a second instance first served and the count."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.serving: list[tuple[float, int]] = []  # (time, instances ready and serving)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            rows = get_json(f"{self.url}/admin/instances")
            ready = [r for r in rows if r["state"] == "ready"]
            serving = sum(1 for r in ready if r["items"] > 0)
            self.serving.append((time.monotonic(), serving if len(ready) > 1 else len(ready)))

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def first(self, since: float, predicate: Any) -> float | None:
        for when, count in self.serving:
            if when >= since and predicate(count):
                return when - since
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="queue_length")
    parser.add_argument("--low", type=float, default=50.0)
    parser.add_argument("--high", type=float, default=500.0)
    parser.add_argument("--before", type=float, default=10.0)
    parser.add_argument("--after", type=float, default=30.0)
    parser.add_argument("--idle", type=float, default=150.0, help="max s to wait for scale-down")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    serve = (
        *("--model", "minilm:int8", "--instances", "1", "--threads", "1"),
        *("--autoscale", args.policy, "--min-instances", "1", "--max-instances", "2"),
        *("--slo-ms", "100", "--scale-down-cooldown-s", "10"),
    )
    with Serving(*serve) as server, Watch(server.url) as watch:
        low = open_loop(server.url, args.low, args.before, seed=1)
        step = time.monotonic()
        high = open_loop(server.url, args.high, args.after, seed=2)
        idle_from = time.monotonic()
        deadline = idle_from + args.idle
        while time.monotonic() < deadline and watch.first(idle_from, lambda n: n == 1) is None:
            time.sleep(0.2)
    before_step = [count for when, count in watch.serving if when < step]
    to_serving = watch.first(step, lambda n: n >= 2)
    to_one = watch.first(idle_from, lambda n: n == 1)
    early = high.start_s < 10.0
    transition = latency_ms(high.latency_s[early & (high.status == 200)])
    settled = latency_ms(high.latency_s[~early & (high.status == 200)])
    result = {
        "policy": args.policy,
        "before": Report(low).to_dict(),
        "after": Report(high).to_dict(),
        "step_to_second_instance_serving_s": to_serving,
        "transition_p99_ms": transition["p99"],
        "transition_requests": int(np.count_nonzero(early)),
        "settled_p99_ms": settled["p99"],
        "idle_to_one_instance_s": to_one,
        "most_instances_before_step": max(before_step, default=0),
        "timeline": [(round(when - step, 2), count) for when, count in watch.serving],
    }
    print(
        f"{args.policy}: {args.low:g} -> {args.high:g} req/s. Before: at most "
        f"{result['most_instances_before_step']} instance(s) serving, p99 "
        f"{result['before']['latency_ms']['p99']} ms, {result['before']['errors']} errors. "
        f"Second instance serving {to_serving} s after the step; p99 of the first 10 s "
        f"{transition['p99']} ms, of the rest {settled['p99']} ms; whole high phase: "
        f"{result['after']['throughput_rps']:.0f} req/s, p99 "
        f"{result['after']['latency_ms']['p99']} ms, {result['after']['errors']} errors, "
        f"{result['after']['dropped']} dropped. Back to one instance {to_one} s after the load "
        "stopped."
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
