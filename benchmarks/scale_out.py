"""Scale-out numbers: echo through 2 gateways vs 1 (64 clients, wrk), and minilm on a two-node local
Ray cluster vs the local backend with the same instance count (32 clients, ``dlproxy bench``).

    python benchmarks/scale_out.py [--duration 10] [--rounds 2] [--json results.json]

The cases alternate, round after round, so drift in what else runs on the machine weighs on all.

Every server and Ray node is started here and stopped by its PID; load goes to 127.0.0.1 only.
Needs ``wrk`` (apt-get install wrk) and the ``ray`` extra.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).parent))
from harness import Serving, bench, get_json

from dlproxy.bench.cluster import LocalRayCluster

HERE = Path(__file__).parent
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def wrk(url: str, script: Path, clients: int, duration: float) -> dict[str, Any]:
    """One wrk run: requests/s, p50/p99 in ms, and the count of non-2xx answers and socket errors."""
    out = subprocess.run(
        ["wrk", "-t2", f"-c{clients}", f"-d{duration:.0f}s", "--latency", "-s", str(script), url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    latency = {
        q: float(v) * _UNITS[u]
        for q, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)", out, re.M)
    }
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {
        "throughput_rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "latency_ms": {"p50": latency["50"], "p99": latency["99"]},
        "errors": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "",
    }


def wait_all_gateways(url: str, gateways: int, model: str, timeout: float = 120.0) -> None:
    """Until ``gateways`` different gateway processes have said all their instances are ready
    (each /stats call is a new connection, which the kernel gives to any of them)."""
    ready: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(ready) < gateways:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(ready)} of {gateways} gateways became ready")
        stats = get_json(f"{url}/stats")
        states = stats["models"][model]["instances"]
        if states and set(states) == {"ready"}:
            ready.add(stats["gateway_pid"])
        time.sleep(0.05)


def echo_through(gateways: int, instances: int, duration: float) -> dict[str, Any]:
    with Serving(
        "--model", "echo", "--gateways", str(gateways), "--instances", str(instances)
    ) as server:
        wait_all_gateways(server.url, gateways, "echo")
        url = f"{server.url}/v2/models/echo/infer"
        wrk(url, HERE / "echo.lua", 64, 3)  # warm-up
        return wrk(url, HERE / "echo.lua", 64, duration)


def minilm(backend: list[str], duration: float) -> dict[str, Any]:
    """One served run, plus the CPU the model processes (workers or actors) spent per item: on a
    shared machine throughput follows the CPU share a process gets; CPU per item does not."""
    with Serving("--model", "minilm:int8", "--instances", "2", "--threads", "1", *backend) as s:
        rows = get_json_list(f"{s.url}/admin/instances")
        processes = [psutil.Process(row["pid"]) for row in rows]
        items_before = get_json(f"{s.url}/stats")["models"]["minilm"]["items"]
        cpu_before = sum(_cpu(p) for p in processes)
        result = bench(s.url, "minilm", 32, duration)
        figures = get_json(f"{s.url}/stats")["models"]["minilm"]
        items = figures["items"] - items_before
        result["model_cpu_ms_per_item"] = (
            (sum(_cpu(p) for p in processes) - cpu_before) * 1000 / items
        )
        result["batch_size_mean"] = figures["batch_size_mean"]
        result["placement"] = [row.get("node") for row in rows]
        return result


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def get_json_list(url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(url, timeout=5) as response:
        rows: list[dict[str, Any]] = json.loads(response.read())
    return rows


CASES = ("echo_1_gateway", "echo_2_gateways", "minilm_local", "minilm_ray")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument(
        "--rounds", type=int, default=2, help="alternate the cases this many times (drift)"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rounds: list[dict[str, Any]] = []
    # The Ray nodes run through every round, so idle Ray processes weigh on both backends alike.
    with LocalRayCluster(["node_a", "node_b"], cpus_per_node=1) as cluster:
        ray = ["--backend", "ray", "--ray-address", cluster.address, "--ray-num-cpus", "1"]
        for _ in range(args.rounds):
            # Same worker count: 1 gateway x 2 echo workers, 2 gateways x 1 worker each.
            rounds.append(
                {
                    "echo_1_gateway": echo_through(1, 2, args.duration),
                    "echo_2_gateways": echo_through(2, 1, args.duration),
                    "minilm_local": minilm([], args.duration),
                    "minilm_ray": minilm(ray, args.duration),
                }
            )
    if args.json:
        args.json.write_text(json.dumps({"rounds": rounds}, indent=2))
    print(table(rounds))


def table(rounds: list[dict[str, Any]]) -> str:
    names = {
        "echo_1_gateway": "echo, 1 gateway x 2 workers, 64 clients (wrk)",
        "echo_2_gateways": "echo, 2 gateways x 1 worker, 64 clients (wrk)",
        "minilm_local": "minilm int8, local backend, 2 instances, 32 clients",
        "minilm_ray": "minilm int8, Ray 2 nodes, 2 actors, 32 clients",
    }
    rows = [
        "| case | round | req/s | p50 ms | p99 ms | errors |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for case in CASES:
        for i, r in enumerate(rounds, 1):
            s = r[case]
            rows.append(
                f"| {names[case]} | {i} | {s['throughput_rps']:.0f} | {s['latency_ms']['p50']:.1f} | "
                f"{s['latency_ms']['p99']:.1f} | {s['errors']} |"
            )

    def mean(case: str) -> float:
        return sum(r[case]["throughput_rps"] for r in rounds) / len(rounds)

    gain = mean("echo_2_gateways") / mean("echo_1_gateway") - 1
    ratio = mean("minilm_ray") / mean("minilm_local")
    batches = [
        tuple(round(r[case]["batch_size_mean"], 1) for case in ("minilm_local", "minilm_ray"))
        for r in rounds
    ]
    cpu = [
        tuple(round(r[case]["model_cpu_ms_per_item"], 2) for case in ("minilm_local", "minilm_ray"))
        for r in rounds
    ]
    rows += [
        "",
        f"2 gateways vs 1: {gain:+.0%} req/s (mean of rounds). Ray vs local: {ratio:.2f} x req/s.",
        f"minilm mean batch size (local, Ray) per round: {batches}",
        f"minilm model-process CPU ms per item (local, Ray) per round: {cpu}",
        f"Ray placement: {rounds[-1]['minilm_ray']['placement']}",
    ]
    return "\n".join(rows)


if __name__ == "__main__":
    main()
