"""What metrics cost on the hot path: echo served with metrics on vs ``--no-metrics``, in one sitting.

    python benchmarks/metrics_overhead.py [--rounds 5] [--duration 8] [--connections 32] [--json OUT]

Two gateways (echo, 1 instance each) run side by side; ``wrk`` (a C load generator, so the client is
not the limit) loads them in turns, ``--rounds`` times each, so a noisy spell on the shared machine
hits both. While the metrics-on gateway is loaded, ``/metrics`` is scraped once a second, as a
Prometheus server would (more often than the usual 15 s), so the cost of rendering counts too.
Reported: the median req/s of each and their ratio (the issue asks for >= 0.97), and, because
req/s swings by +-30 % on a shared 2-core machine, also the gateway's CPU time per request (user +
system of the gateway process, read with psutil around each run): when the gateway is the
bottleneck, the ratio of CPU per request is the ratio of throughputs, and it is far less noisy.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).parent))
from harness import Serving

LUA = Path(__file__).with_name("echo.lua")


def wrk(url: str, connections: int, duration: float) -> tuple[float, int]:
    """(requests per second, requests) of one wrk run; fails loudly on errors or non-2xx answers."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "-s", str(LUA), url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if not rate or not total:
        raise RuntimeError(f"no Requests/sec in wrk output:\n{out}")
    return float(rate.group(1)), int(total.group(1))


def scrape_while(url: str, stop: threading.Event) -> int:
    """Scrape ``url`` once a second until ``stop``; the number of scrapes."""
    scrapes = 0
    while not stop.wait(1.0):
        with urllib.request.urlopen(url, timeout=5) as response:
            response.read()
        scrapes += 1
    return scrapes


def loaded(server: Serving, args: argparse.Namespace, scrape: bool) -> tuple[float, float]:
    """(req/s, gateway CPU microseconds per request) of one run."""
    gateway = psutil.Process(server.process.pid)
    before = gateway.cpu_times()
    stop = threading.Event()
    scraper = threading.Thread(target=scrape_while, args=(f"{server.url}/metrics", stop))
    if scrape:
        scraper.start()
    try:
        rate, requests = wrk(f"{server.url}/v2/models/echo/infer", args.connections, args.duration)
        after = gateway.cpu_times()
        cpu = (after.user - before.user) + (after.system - before.system)
        return rate, cpu / requests * 1e6
    finally:
        stop.set()
        if scrape:
            scraper.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    common = ("--model", "echo", "--instances", "1")
    runs: dict[str, list[float]] = {"on": [], "off": []}
    cpu_us: dict[str, list[float]] = {"on": [], "off": []}
    with Serving(*common) as on, Serving(*common, "--no-metrics") as off:
        wrk(f"{on.url}/v2/models/echo/infer", args.connections, 2)  # warm-up, not counted
        wrk(f"{off.url}/v2/models/echo/infer", args.connections, 2)
        for round_ in range(args.rounds):
            order = [("on", on), ("off", off)] if round_ % 2 == 0 else [("off", off), ("on", on)]
            for name, server in order:
                rate, cpu = loaded(server, args, scrape=name == "on")
                runs[name].append(rate)
                cpu_us[name].append(cpu)
                print(
                    f"round {round_ + 1} metrics {name}: {rate:,.0f} req/s, "
                    f"gateway CPU {cpu:.1f} us/request",
                    flush=True,
                )
    result: dict[str, Any] = {
        "runs": runs,
        "median_on": statistics.median(runs["on"]),
        "median_off": statistics.median(runs["off"]),
        "cpu_us_per_request": cpu_us,
        "median_cpu_us_on": statistics.median(cpu_us["on"]),
        "median_cpu_us_off": statistics.median(cpu_us["off"]),
    }
    result["ratio"] = result["median_on"] / result["median_off"]
    result["cpu_ratio"] = result["median_cpu_us_off"] / result["median_cpu_us_on"]
    print(
        f"\nmetrics on {result['median_on']:,.0f} req/s, off {result['median_off']:,.0f} req/s "
        f"(medians of {args.rounds}): ratio {result['ratio']:.3f} (target >= 0.97)\n"
        f"gateway CPU per request: on {result['median_cpu_us_on']:.1f} us, off "
        f"{result['median_cpu_us_off']:.1f} us: throughput bound {result['cpu_ratio']:.3f}"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
