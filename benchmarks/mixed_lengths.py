"""Length-aware batching on a mixed workload (#17 item 5): 90% short sentences, 10% paragraphs of
150-250 tokens, in a random order, minilm int8 with the defaults, ``dlproxy bench`` closed loop.

Each setup runs in turn for ``--rounds`` rounds (medians reported): batches in arrival order
without a token bound (as before), by length without one, by length with ``--max-batch-tokens``
(default 1024, as served by default), and
with ``--baseline-src DIR`` the dlproxy of an earlier tree. Reported: throughput, p50 / p99, and
the padding's share of the tokens the model ran (``dlproxy_batch_tokens``; the baseline has no
such metric).

    python benchmarks/mixed_lengths.py [--clients 64] [--duration 15] [--rounds 2] \\
        [--baseline-src DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).parent))
from harness import DLPROXY, Serving, run_json

from dlproxy.models.builtin import minilm
from dlproxy.models.builtin.corpus import sentences


def workload(path: Path, count: int = 4000, seed: int = 7) -> dict[str, float]:
    """``count`` lines: 90% corpus sentences, 10% paragraphs of 150-250 tokens (by minilm's own
    tokenizer), shuffled. Returns the token figures of what was written."""
    rng = random.Random(seed)
    tokenizer = minilm.load_tokenizer()
    tokenizer.no_truncation()
    corpus = sentences()
    lines, lengths = [], []
    while len(lines) < count:
        if rng.random() < 0.1:
            target = rng.randint(150, 250)
            words: list[str] = []
            while len(tokenizer.encode(" ".join(words)).ids) < target:
                words.append(rng.choice(corpus))
            text = " ".join(words)
            ids = tokenizer.encode(text).ids
            while len(ids) > 250:  # trim to the range, a word at a time
                text = text.rsplit(" ", 1)[0]
                ids = tokenizer.encode(text).ids
        else:
            text = rng.choice(corpus)
        lines.append(f"{len(lines)} {text}")  # a number first: every line is distinct
        lengths.append(len(tokenizer.encode(lines[-1]).ids))
    path.write_text("\n".join(lines) + "\n")
    long = [n for n in lengths if n >= 150]
    return {
        "lines": len(lines),
        "share_long": len(long) / len(lines),
        "mean_tokens_short": statistics.mean(n for n in lengths if n < 150),
        "mean_tokens_long": statistics.mean(long),
    }


def tokens(url: str) -> tuple[float, float]:
    """(real, padding) tokens so far, from /metrics."""
    real = padding = 0.0
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        if family.name == "dlproxy_batch_tokens":
            for sample in family.samples:
                if sample.labels["kind"] == "real":
                    real += sample.value
                else:
                    padding += sample.value
    return real, padding


def run(
    inputs: Path, clients: int, duration: float, src: Path | None, *args: str
) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(src)} if src is not None else None
    with Serving(*args, env=env) as server:
        common = ["bench", server.url, "--model", "minilm", "--inputs", f"file:{inputs}"]
        run_json([*DLPROXY, *common, "--concurrency", "8", "--duration", "3"])  # warm
        before = tokens(server.url)
        result = run_json(
            [*DLPROXY, *common, "--concurrency", str(clients), "--duration", str(duration)]
        )
        after = tokens(server.url)
    real, padding = after[0] - before[0], after[1] - before[1]
    return {
        "throughput_rps": round(result["throughput_rps"], 1),
        "p50_ms": round(result["latency_ms"]["p50"], 1),
        "p99_ms": round(result["latency_ms"]["p99"], 1),
        "errors": result["requests"] - result["ok"],
        "padding_share": round(padding / (real + padding), 3) if real + padding else None,
    }


def median_of(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over the rounds (None where no round has it)."""
    medians: dict[str, Any] = {}
    for key in results[0]:
        values = [r[key] for r in results if r[key] is not None]
        medians[key] = statistics.median(values) if values else None
    return medians


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--duration", type=float, default=15)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-batch-tokens", type=int, default=1024)
    parser.add_argument("--baseline-src", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    minilm.export("int8", quiet=True)
    setups: dict[str, tuple[Path | None, list[str]]] = {
        "arrival order": (None, ["--no-batch-by-length", "--max-batch-tokens", "0"]),
        "by length, no token bound": (None, ["--max-batch-tokens", "0"]),
        f"by length, max {args.max_batch_tokens} tokens": (
            None,
            ["--max-batch-tokens", str(args.max_batch_tokens)],
        ),
    }
    if args.baseline_src is not None:
        setups["baseline"] = (args.baseline_src, [])
    with tempfile.TemporaryDirectory() as folder:
        inputs = Path(folder) / "mixed.txt"
        mix = workload(inputs)
        print(mix, flush=True)
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in setups}
        for _ in range(args.rounds):
            for name, (src, extra) in setups.items():
                rounds[name].append(run(inputs, args.clients, args.duration, src, *extra))
                print(name, rounds[name][-1], flush=True)
    medians = {name: median_of(results) for name, results in rounds.items()}
    print(f"| setup ({args.clients} clients) | req/s | p50 ms | p99 ms | padding |")
    print("|---|---|---|---|---|")
    for name, m in medians.items():
        padding = f"{m['padding_share']:.0%}" if m["padding_share"] is not None else "-"
        print(
            f"| {name} | {m['throughput_rps']:.0f} | {m['p50_ms']:.0f} | {m['p99_ms']:.0f} "
            f"| {padding} |"
        )
    if args.json:
        report = {"workload": mix, "medians": medians, "rounds": rounds}
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
