"""Event-loop lag of the gateway while it refuses a 16 MiB input of 4,000,000 empty texts
(shape [1, 4000000], binary, just under the body limit): a probe asks /v2/health/live every 5 ms and the worst answer
time is the lag (#16 item 11; target < 50 ms).

    python benchmarks/event_loop_lag.py [--model minilm] [--requests 5]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).parent))
from harness import Serving


def hostile_body() -> tuple[bytes, dict[str, str]]:
    count = 4_000_000  # 16 MB of framing: just under the default body limit (16 MiB)
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "text",
                    "datatype": "BYTES",
                    "shape": [1, count],
                    "parameters": {"binary_data_size": 4 * count},
                }
            ]
        }
    )
    return header + b"\0\0\0\0" * count, {"Inference-Header-Content-Length": str(len(header))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--requests", type=int, default=5)
    args = parser.parse_args()
    body, headers = hostile_body()
    with Serving("--model", args.model, "--instances", "1") as server:
        worst = [0.0]
        stop = threading.Event()

        def probe() -> None:
            with httpx.Client() as client:
                while not stop.wait(0.005):
                    started = time.perf_counter()
                    client.get(f"{server.url}/v2/health/live")
                    worst[0] = max(worst[0], time.perf_counter() - started)

        quiet = threading.Thread(target=probe)
        quiet.start()
        time.sleep(2)
        stop.set()
        quiet.join()
        baseline, worst[0] = worst[0], 0.0
        stop.clear()
        probing = threading.Thread(target=probe)
        probing.start()
        statuses, took = [], []
        with httpx.Client(timeout=60) as client:
            for _ in range(args.requests):
                started = time.perf_counter()
                response = client.post(
                    f"{server.url}/v2/models/{args.model}/infer", content=body, headers=headers
                )
                took.append(time.perf_counter() - started)
                statuses.append(response.status_code)
        stop.set()
        probing.join()
    print(
        f"quiet probe worst {baseline * 1000:.1f} ms; under the hostile input: worst "
        f"{worst[0] * 1000:.1f} ms (the lag), answers {statuses}, each in "
        f"{max(took) * 1000:.0f} ms at most"
    )


if __name__ == "__main__":
    main()
