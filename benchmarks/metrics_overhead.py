"""What metrics cost on the hot path: echo served with metrics on vs ``--no-metrics``, in one sitting.

    python benchmarks/metrics_overhead.py [--rounds 5] [--duration 8] [--connections 32] [--json OUT]

Two gateways (echo, 1 instance each) run side by side; ``wrk`` (a C load generator, so the client is
not the limit) loads them in turns, ``--rounds`` times each, so a noisy spell on the shared machine
hits both. While the metrics-on gateway is loaded, ``/metrics`` is scraped once a second, as a
Prometheus server would (more often than the usual 15 s), so the cost of rendering counts too.
Reported: the median req/s of each and their ratio (the issue asks for >= 0.97).
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

sys.path.insert(0, str(Path(__file__).parent))
from harness import Serving

LUA = Path(__file__).with_name("echo.lua")


def wrk(url: str, connections: int, duration: float) -> float:
    """Requests per second from one wrk run; fails loudly on socket errors or non-2xx answers."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "-s", str(LUA), url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match:
        raise RuntimeError(f"no Requests/sec in wrk output:\n{out}")
    return float(match.group(1))


def scrape_while(url: str, stop: threading.Event) -> int:
    """Scrape ``url`` once a second until ``stop``; the number of scrapes."""
    scrapes = 0
    while not stop.wait(1.0):
        with urllib.request.urlopen(url, timeout=5) as response:
            response.read()
        scrapes += 1
    return scrapes


def loaded(server: Serving, args: argparse.Namespace, scrape: bool) -> float:
    stop = threading.Event()
    scraper = threading.Thread(target=scrape_while, args=(f"{server.url}/metrics", stop))
    if scrape:
        scraper.start()
    try:
        return wrk(f"{server.url}/v2/models/echo/infer", args.connections, args.duration)
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
    with Serving(*common) as on, Serving(*common, "--no-metrics") as off:
        wrk(f"{on.url}/v2/models/echo/infer", args.connections, 2)  # warm-up, not counted
        wrk(f"{off.url}/v2/models/echo/infer", args.connections, 2)
        for round_ in range(args.rounds):
            order = [("on", on), ("off", off)] if round_ % 2 == 0 else [("off", off), ("on", on)]
            for name, server in order:
                runs[name].append(loaded(server, args, scrape=name == "on"))
                print(f"round {round_ + 1} metrics {name}: {runs[name][-1]:,.0f} req/s", flush=True)
    result: dict[str, Any] = {
        "runs": runs,
        "median_on": statistics.median(runs["on"]),
        "median_off": statistics.median(runs["off"]),
    }
    result["ratio"] = result["median_on"] / result["median_off"]
    print(
        f"\nmetrics on {result['median_on']:,.0f} req/s, off {result['median_off']:,.0f} req/s "
        f"(medians of {args.rounds}): ratio {result['ratio']:.3f} (target >= 0.97)"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
