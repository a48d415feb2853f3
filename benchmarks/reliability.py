"""Reliability numbers in one sitting (minilm, default variant, 2 instances):

1. chaos: kill -9 one of the two workers every 10 s for 60 s under 32 concurrent clients;
2. overload: capacity (closed loop), then open loop at 50 % and at 3x capacity with admission
   control (``--max-queue-wait-ms``): goodput, p99 of admitted requests, refusal latency;
3. soak (``--soak S``, default 600): 70 % of capacity; memory of the gateway and workers
   at the start and the end;
4. hostile (``--hostile S``, default 60): good clients at 70 % of capacity (minilm, fresh
   sentences, through an L1 + Redis cache), alone (quiet) and then while at once: 1,000
   connections hold half-sent requests, malformed requests arrive (bad JSON, shapes, NaN,
   oversize), poison requests go to a model that answers wrong row counts or dies of them
   (``benchmarks/broken_model.py``), a minilm worker is SIGSTOPped for 8 s and Redis for 8 s.
   Reported: the good clients' goodput and p99 against the quiet run, and the requests left
   unanswered or answered wrong (a checker compares known sentences to their quiet answers).

    python benchmarks/reliability.py [--chaos 60] [--overload 60] [--soak 600] [--hostile 60]
        [--pin] [--baseline-src DIR] [--json OUT]

``--pin``: in the overload part, the gateway and its workers on CPU 0 and the load generator on
CPU 1 (``taskset``), so that what the gateway does is seen apart from the generator's cost.
``--baseline-src DIR``: the overload part also for the dlproxy whose ``src`` is DIR (a ``git
worktree`` of an earlier commit), in the same sitting.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import psutil

sys.path.insert(0, str(Path(__file__).parent))
from harness import DLPROXY, Serving, free_port, run_json


def bench(url: str, *extra: str, cpus: str = "") -> dict[str, Any]:
    """``dlproxy bench`` of minilm; on ``cpus`` only (``taskset -c``), if given."""
    pinned = ["taskset", "-c", cpus] if cpus else []
    return run_json([*pinned, *DLPROXY, "bench", url, "--model", "minilm", "--warmup", "2", *extra])


def workers(server: Serving) -> list[psutil.Process]:
    return psutil.Process(server.process.pid).children()


def chaos(seconds: float) -> dict[str, Any]:
    with Serving("--instances", "2") as server:
        kills: list[int] = []
        stop = threading.Event()

        def killer() -> None:
            time.sleep(2 + 5)  # after the warm-up, then every 10 s
            while not stop.wait(0 if not kills else 10):
                victim = random.choice(workers(server))
                os.kill(victim.pid, signal.SIGKILL)
                kills.append(victim.pid)

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        result = bench(server.url, "--concurrency", "32", "--duration", str(seconds))
        stop.set()
        thread.join()
        return {"kills": len(kills), "bench": result}


def overload(
    seconds: float, max_wait_ms: float, pin: bool = False, src: Path | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    env = {**os.environ, "PYTHONPATH": str(src)} if src is not None else None
    with Serving("--instances", "2", "--max-queue-wait-ms", str(max_wait_ms), env=env) as server:
        cpus = ""
        if pin:  # the server's processes on CPU 0, the generator on CPU 1
            for process in [psutil.Process(server.process.pid), *workers(server)]:
                process.cpu_affinity([0])
            cpus = "1"
        run = functools.partial(bench, server.url, cpus=cpus)
        capacity = run("--concurrency", "32", "--duration", "15")["throughput_rps"]
        out["capacity_rps"] = capacity
        for part, rate, duration in (("half", 0.5, 20.0), ("triple", 3.0, seconds)):
            before = cpu_seconds(server)
            out[part] = run("--rate", str(capacity * rate), "--duration", str(duration))
            after = cpu_seconds(server)
            # warm-up included: per request, it is an upper bound of the gateway's cost
            out[part]["cpu_seconds"] = {k: round(after[k] - before[k], 2) for k in after}
    return out


def cpu_seconds(server: Serving) -> dict[str, float]:
    """CPU seconds (user + system) so far of the gateway and of its workers together."""
    gateway = sum(psutil.Process(server.process.pid).cpu_times()[:2])
    return {"gateway": gateway, "workers": sum(sum(w.cpu_times()[:2]) for w in workers(server))}


def soak(seconds: float, rate: float | None) -> dict[str, Any]:
    """RSS of the gateway and workers over ``seconds`` at ``rate`` (default: 70 % of capacity,
    measured here first), sampled every 30 s: a leak grows steadily, while a one-off rise (an
    arena sized for the largest batch seen, buffers of a burst) levels off."""
    with Serving("--instances", "2") as server:
        if rate is None:
            capacity = bench(server.url, "--concurrency", "32", "--duration", "15")
            rate = 0.7 * capacity["throughput_rps"]
        bench(server.url, "--rate", str(rate), "--duration", "20")  # warm: first allocations
        processes = [psutil.Process(server.process.pid), *workers(server)]
        samples: list[list[int]] = []
        stop = threading.Event()

        def sample() -> None:
            while True:
                samples.append([p.memory_info().rss for p in processes])
                if stop.wait(30):
                    return

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            result = bench(server.url, "--rate", str(rate), "--duration", str(seconds))
        finally:
            stop.set()
            sampler.join()
        samples.append([p.memory_info().rss for p in processes])
    before, after = samples[0], samples[-1]
    growth = [(b2 - b1) / b1 for b1, b2 in zip(before, after, strict=True)]
    half = samples[len(samples) // 2]
    second_half = [(b2 - b1) / b1 for b1, b2 in zip(half, after, strict=True)]
    return {
        "rate": rate,
        "rss_before": before,
        "rss_after": after,
        "rss_samples": samples,
        "growth": growth,
        "growth_second_half": second_half,
        "bench": result,
    }


KNOWN = [f"a sentence the checker knows, number {i}" for i in range(16)]


def texts_body(texts: list[str], **parameters: Any) -> bytes:
    payload: dict[str, Any] = {
        "inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}]
    }
    if parameters:
        payload["parameters"] = parameters
    return orjson.dumps(payload)


def embeddings(url: str, texts: list[str]) -> np.ndarray:
    response = httpx.post(f"{url}/v2/models/minilm/infer", content=texts_body(texts), timeout=30)
    response.raise_for_status()
    output = response.json()["outputs"][0]
    return np.array(output["data"], np.float32).reshape(output["shape"])


MALFORMED: list[tuple[str, bytes, dict[str, str]]] = [
    ("bad json", b'{"inputs": [', {}),
    (
        "wrong datatype",
        orjson.dumps(
            {"inputs": [{"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
        ),
        {},
    ),
    (
        "wrong shape",
        orjson.dumps(
            {
                "inputs": [
                    {"name": "text", "shape": [1, 4194304], "datatype": "BYTES", "data": ["a"]}
                ]
            }
        ),
        {},
    ),
    ("too many items", texts_body(["x"] * 300), {}),
    ("huge integer", texts_body(["x"])[:-1] + b', "parameters": {"n": ' + b"9" * 30 + b"}}", {}),
    ("absurd deadline", texts_body(["x"]), {"X-Request-Timeout-Ms": "1" + "0" * 400}),
]


class Hostility:
    """Everything the hostile run throws at the server besides the good clients, in threads."""

    PARTS = ("slow", "malformed", "poison", "checker", "stalls")

    def __init__(
        self,
        server: Serving,
        redis: subprocess.Popen[bytes],
        reference: np.ndarray,
        parts: tuple[str, ...] = PARTS,
    ):
        self.url, self.port, self.server_pid = server.url, server.port, server.process.pid
        self.redis, self.reference = redis, reference
        self.stop = threading.Event()
        self.counts: dict[str, int] = {
            "malformed_sent": 0, "malformed_wrong": 0, "poison_sent": 0, "poison_wrong": 0,
            "checked": 0, "checks_wrong": 0, "checks_unanswered": 0, "slow_connections": 0,
        }  # fmt: skip
        self.threads = [threading.Thread(target=getattr(self, part), daemon=True) for part in parts]

    def __enter__(self) -> Hostility:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def slow(self) -> None:
        """1,000 connections holding half-sent requests, opened again as the server closes them."""

        async def hold() -> None:
            head = b"POST /v2/models/minilm/infer HTTP/1.1\r\nHost: x\r\n"
            open_ = []
            while not self.stop.is_set():
                open_ = [(r, w) for r, w in open_ if not r.at_eof()]
                while len(open_) < 1000:
                    reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                    writer.write(head if len(open_) % 2 else head + b"Content-Length: 999\r\n\r\n{")
                    open_.append((reader, writer))
                    self.counts["slow_connections"] += 1
                await asyncio.sleep(0.5)
            for _, writer in open_:
                writer.close()

        asyncio.run(hold())

    def malformed(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.stop.wait(0.5):  # ~12/s: hostile, not a second load test
                for _, body, headers in MALFORMED:
                    response = client.post(
                        f"{self.url}/v2/models/minilm/infer", content=body, headers=headers
                    )
                    self.counts["malformed_sent"] += 1
                    if not 400 <= response.status_code < 500:
                        self.counts["malformed_wrong"] += 1

    def poison(self) -> None:
        """Wrong row counts and a query of death for the broken model: a clear 5xx each."""
        with httpx.Client(timeout=60) as client:
            while not self.stop.wait(5.0):  # each death costs a worker restart (~1 core-s)
                for text in ("wrong rows", "die"):
                    response = client.post(
                        f"{self.url}/v2/models/broken/infer", content=texts_body([text, "ok"])
                    )
                    self.counts["poison_sent"] += 1
                    if response.status_code not in (500, 503):
                        self.counts["poison_wrong"] += 1

    def checker(self) -> None:
        """Known sentences, in varying company: each answer must be the quiet run's."""
        rng = random.Random(7)
        with httpx.Client(timeout=60) as client:
            while not self.stop.wait(0.2):
                picked = rng.sample(range(len(KNOWN)), rng.randint(1, 4))
                try:
                    response = client.post(
                        f"{self.url}/v2/models/minilm/infer",
                        content=texts_body([KNOWN[i] for i in picked]),
                    )
                except httpx.HTTPError:
                    self.counts["checks_unanswered"] += 1
                    continue
                self.counts["checked"] += 1
                if response.status_code != 200:
                    self.counts["checks_unanswered"] += 1
                    continue
                output = response.json()["outputs"][0]
                got = np.array(output["data"], np.float32).reshape(output["shape"])
                if not np.allclose(got, self.reference[picked], atol=1e-4):
                    self.counts["checks_wrong"] += 1

    def stalls(self) -> None:
        """A minilm worker SIGSTOPped for 8 s, then Redis for 8 s."""
        if self.stop.wait(8):
            return
        minilm = [p for p in psutil.Process(self.server_pid).children() if "minilm" in p.cmdline()]
        for victim in (minilm[0].pid, self.redis.pid):
            os.kill(victim, signal.SIGSTOP)
            self.stop.wait(8)
            with contextlib.suppress(ProcessLookupError):  # the watchdog killed a hung worker
                os.kill(victim, signal.SIGCONT)
            if self.stop.wait(8):
                return


def hostile(seconds: float, parts: tuple[str, ...] = Hostility.PARTS) -> dict[str, Any]:
    redis_port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]
    )
    try:
        with Serving(
            "--model", "minilm", "--model", "broken_model:Broken", "--instances", "2",
            "--cache", "lru", "--redis", f"redis://127.0.0.1:{redis_port}", "--hang-timeout-s", "3",
        ) as server:  # fmt: skip
            capacity = bench(server.url, "--concurrency", "32", "--duration", "15")[
                "throughput_rps"
            ]
            rate = str(0.7 * capacity)
            reference = embeddings(server.url, KNOWN)
            quiet = bench(server.url, "--rate", rate, "--duration", str(seconds), "--timeout", "30")
            with Hostility(server, redis, reference, parts) as hostility:
                loaded = bench(
                    server.url, "--rate", rate, "--duration", str(seconds), "--timeout", "30"
                )
            return {"capacity_rps": capacity, "quiet": quiet, "hostile": loaded, **hostility.counts}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(redis.pid, signal.SIGCONT)
        redis.terminate()
        redis.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chaos", type=float, default=60)
    parser.add_argument("--overload", type=float, default=60)
    parser.add_argument("--max-queue-wait-ms", type=float, default=100)
    parser.add_argument("--soak", type=float, default=600)
    parser.add_argument("--hostile", type=float, default=60)
    parser.add_argument(
        "--hostile-parts",
        default=",".join(Hostility.PARTS),
        help="what the hostile run does, comma-separated (default: all)",
    )
    parser.add_argument("--pin", action="store_true")
    parser.add_argument("--baseline-src", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    if args.chaos:
        results["chaos"] = chaos(args.chaos)
    if args.overload:
        results["overload"] = overload(args.overload, args.max_queue_wait_ms, args.pin)
        if args.baseline_src is not None:
            results["overload_baseline"] = overload(
                args.overload, args.max_queue_wait_ms, args.pin, args.baseline_src
            )
    if args.soak:
        capacity = results.get("overload", {}).get("capacity_rps")
        rate = 0.7 * capacity if capacity else None
        results["soak"] = soak(args.soak, rate)
    if args.hostile:
        results["hostile"] = hostile(args.hostile, tuple(args.hostile_parts.split(",")))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(table(results))


def table(r: dict[str, Any]) -> str:
    rows = ["| measure | value | target |", "| --- | --- | --- |"]
    if "chaos" in r:
        b = r["chaos"]["bench"]
        rows.append(
            f"| kill -9 of a worker every 10 s, 32 clients | {r['chaos']['kills']} kills, {b['requests']} requests, "
            f"{b['errors']} failed, p99 {b['latency_ms']['p99']:.0f} ms | 0 failed |"
        )
    for part in ("overload", "overload_baseline"):
        if part not in r:
            continue
        if part == "overload_baseline":
            rows.append("| **baseline** (--baseline-src) | | |")
        o = r[part]
        half, triple = o["half"], o["triple"]
        refusal = triple.get("refusal_latency_ms") or {}
        rows += [
            f"| capacity (32 clients, closed loop) | {o['capacity_rps']:.0f} req/s | |",
            f"| open loop at 50 % | p99 {half['latency_ms']['p99']:.1f} ms | |",
            f"| open loop at 3x: goodput | {triple['throughput_rps']:.0f} req/s = {triple['throughput_rps'] / o['capacity_rps']:.2f} x capacity | >= 0.90 x |",
            f"| open loop at 3x: p99 of admitted | {triple['latency_ms']['p99']:.1f} ms = {triple['latency_ms']['p99'] / half['latency_ms']['p99']:.1f} x the 50 % p99 | <= 4 x |",
            f"| open loop at 3x: refusals | {sum(v for k, v in triple['errors_by_status'].items() if k in ('503', '429'))}, "
            f"p50 {refusal.get('p50') or 0:.2f} ms, p99 {refusal.get('p99') or 0:.2f} ms, max {refusal.get('max') or 0:.2f} ms | < 5 ms |",
        ]
        for name, b in (("50 %", half), ("3x", triple)):
            cpu = b.get("cpu_seconds")
            if cpu:
                rows.append(
                    f"| CPU at {name}: gateway / workers | {cpu['gateway']:.2f} / {cpu['workers']:.2f} s "
                    f"for {b['requests']} requests ({b['ok']} admitted) | |"
                )
    if "soak" in r:
        s = r["soak"]
        names = ["gateway"] + [f"worker {i + 1}" for i in range(len(s["growth"]) - 1)]
        growth = ", ".join(f"{n} {g * 100:+.1f} %" for n, g in zip(names, s["growth"], strict=True))
        late = ", ".join(
            f"{n} {g * 100:+.1f} %" for n, g in zip(names, s["growth_second_half"], strict=True)
        )
        rows.append(
            f"| soak at {s['rate']:.0f} req/s, {s['bench']['duration_s']:.0f} s: RSS growth | {growth} "
            f"(second half alone: {late}); {s['bench']['errors']} errors, p99 "
            f"{s['bench']['latency_ms']['p99']:.0f} ms | < 5 % |"
        )
    if "hostile" in r:
        h = r["hostile"]
        quiet, loaded = h["quiet"], h["hostile"]
        rows += [
            f"| hostile: good clients' goodput | {loaded['throughput_rps']:.0f} req/s vs {quiet['throughput_rps']:.0f} quiet "
            f"({loaded['throughput_rps'] / quiet['throughput_rps']:.2f} x), rate {0.7 * h['capacity_rps']:.0f}/s | |",
            f"| hostile: good clients' p99 | {loaded['latency_ms']['p99']:.1f} ms vs {quiet['latency_ms']['p99']:.1f} ms quiet | |",
            f"| hostile: good requests failed | {loaded['errors']} of {loaded['requests']} ({loaded['errors_by_status']}) | 0 |",
            f"| hostile: checked answers wrong / unanswered | {h['checks_wrong']} / {h['checks_unanswered']} of {h['checked']} | 0 |",
            f"| hostile: malformed answered other than 4xx | {h['malformed_wrong']} of {h['malformed_sent']} | 0 |",
            f"| hostile: poison answered other than 5xx | {h['poison_wrong']} of {h['poison_sent']} | 0 |",
            f"| hostile: slow connections opened | {h['slow_connections']} | |",
        ]
    return "\n".join(rows)


if __name__ == "__main__":
    main()
