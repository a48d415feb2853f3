"""dlproxy against NVIDIA Triton (PyTriton) and against an earlier dlproxy, in one sitting (#17).

Each system serves minilm int8 (the same ONNX file and tokenizer) with 2 instances of 1 thread on
this machine's cores; ``dlproxy bench`` drives each in a closed loop at 1, 8, 32 and 128 clients,
one fresh sentence per request, after a warm-up. The model alone (``dlproxy bench --offline``,
every core's threads) gives the batch-1 latency a lone request is held to.

    python benchmarks/contention.py [--clients 1,8,32,128] [--duration 15] \\
        [--also 'LABEL=ARGS'] [--baseline-src DIR] [--triton-python PATH] [--rounds N] \\
        [--json OUT]

``--also 'LABEL=ARGS'``: also run this dlproxy with those ``serve`` arguments (repeatable).
``--baseline-src DIR``: also run the dlproxy whose ``src`` folder is DIR (a ``git worktree`` of
an earlier commit), with this environment's packages. ``--triton-python PATH``: also run
``peers/pytriton_minilm.py`` under that interpreter (an environment with nvidia-pytriton; see
that file). ``--rounds N``: every system's ladder N times, in turn; the table shows medians.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from harness import DLPROXY, Serving, run_json

from dlproxy.console import free_port
from dlproxy.models.builtin import minilm


def bench(url: str, clients: int, duration: float, *extra: str) -> dict[str, Any]:
    return run_json(
        [
            *DLPROXY,
            "bench",
            url,
            "--model",
            "minilm",
            *("--concurrency", str(clients), "--duration", str(duration), "--warmup", "2"),
            *extra,
        ]
    )


def ladder(url: str, steps: list[int], duration: float, *extra: str) -> dict[str, Any]:
    bench(url, 8, 3, *extra)  # warm: sessions, allocator, connections
    out = {}
    for clients in steps:
        result = bench(url, clients, duration, *extra)
        latency = result["latency_ms"]
        out[str(clients)] = {
            "throughput_rps": round(result["throughput_rps"], 1),
            "p50_ms": round(latency["p50"], 2),
            "p99_ms": round(latency["p99"], 2),
            "errors": result["requests"] - result["ok"],
        }
        print(clients, out[str(clients)], flush=True)
    return out


def dlproxy_ladder(
    steps: list[int], duration: float, src: Path | None, *args: str
) -> dict[str, Any]:
    env = None
    if src is not None:  # the earlier tree's modules win over this checkout's editable install
        env = {**os.environ, "PYTHONPATH": str(src)}
    with Serving(*args, env=env) as server:
        return ladder(server.url, steps, duration)


def triton_ladder(python: str, steps: list[int], duration: float) -> dict[str, Any]:
    port = free_port()
    base = subprocess.run(
        [python, "-c", "import sys; print(sys.base_prefix)"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    env = {**os.environ, "LD_LIBRARY_PATH": f"{base}/lib"}
    server = subprocess.Popen(
        [
            python,
            str(Path(__file__).parent / "peers" / "pytriton_minilm.py"),
            *("--port", str(port)),
            *("--model", str(minilm.onnx_path("int8"))),
            *("--tokenizer", str(minilm.tokenizer_file())),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/v2/models/minilm/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("Triton did not become ready") from None
                time.sleep(0.5)
        return ladder(url, steps, duration, "--item-shape", "1")
    finally:
        server.terminate()
        server.wait(60)


def median_ladder(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per step, the median of each figure over the rounds."""
    return {
        step: {key: statistics.median(r[step][key] for r in results) for key in results[0][step]}
        for step in results[0]
    }


def markdown(report: dict[str, Any]) -> str:
    systems = list(report["systems"])
    lines = [
        "| clients | " + " | ".join(systems) + " |",
        "|---|" + "---|" * len(systems),
    ]
    for clients in report["clients"]:
        cells = []
        for system in systems:
            row = report["systems"][system][str(clients)]
            cells.append(
                f"{row['throughput_rps']:,.0f} · {row['p50_ms']:.1f} / {row['p99_ms']:.1f} ms"
            )
        lines.append(f"| {clients} | " + " | ".join(cells) + " |")
    alone = report["model_alone"]
    lines.append("")
    lines.append(
        f"Model alone ({alone['threads']} threads): batch 1 p50 {alone['latency_p50_ms']} ms; "
        f"best {alone['best_throughput']:.0f} items/s at batch {alone['best_batch_size']}."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", default="1,8,32,128")
    parser.add_argument("--duration", type=float, default=15)
    parser.add_argument("--baseline-src", type=Path)
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="LABEL=ARGS",
        help="this dlproxy again with these serve arguments, e.g. 'no borrowing=--borrow-threads 0'",
    )
    parser.add_argument("--triton-python")
    parser.add_argument(
        "--rounds", type=int, default=1, help="run every system's ladder this many times in turn"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    steps = [int(c) for c in args.clients.split(",")]
    minilm.export("int8", quiet=True)
    runs: dict[str, Callable[[], dict[str, Any]]] = {
        "dlproxy": lambda: dlproxy_ladder(steps, args.duration, None)
    }
    for also in args.also:
        label, _, extra = also.partition("=")
        runs[f"dlproxy ({label})"] = functools.partial(
            dlproxy_ladder, steps, args.duration, None, *extra.split()
        )
    if args.baseline_src is not None:
        runs["dlproxy (baseline)"] = lambda: dlproxy_ladder(steps, args.duration, args.baseline_src)
    if args.triton_python:
        runs["Triton (PyTriton), 2 instances"] = lambda: triton_ladder(
            args.triton_python, steps, args.duration
        )
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in runs}
    for _ in range(args.rounds):  # in turn, so that the machine's drift hits every system alike
        for name, run in runs.items():
            print(name, flush=True)
            rounds[name].append(run())
    systems = {name: median_ladder(results) for name, results in rounds.items()}
    cores = os.cpu_count() or 1
    alone = run_json([*DLPROXY, "bench", "--offline", "minilm", "--threads", str(cores)])
    report = {
        "clients": steps,
        "rounds": args.rounds,
        "systems": systems,
        "each_round": rounds,
        "model_alone": alone,
    }
    print(markdown(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
