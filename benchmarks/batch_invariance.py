"""The minilm variants side by side, in one sitting: speed, batch invariance, quality per item.

    python benchmarks/batch_invariance.py [--rounds 5] [--json results.json]

For each variant (and today's default before this change: ``int8-dynamic`` with ONNX Runtime's
SkipLayerNormalization fusion left on, as it was served): items/s at batch 1 and 32 on one thread
(decoding and tokenizing included, alternating rounds, best time per batch kept), the largest
element difference between an item alone and the same item in batches (32 mixed sentences with a
long chunked text, 7 at a time, padded beside a 120-token sentence), mean / min cosine to fp32
per item computed alone and in batches of 32, and the file size. Quality sentences are the 280
corpus sentences that ``int8-static`` calibration never sees (the per-row recipe has none).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from dlproxy.models.builtin import minilm
from dlproxy.models.builtin.corpus import sentences

LONG = " ".join(sentences()[:40])  # ~800 tokens: several windows
PADDING = " ".join(sentences()[:6])  # ~120 tokens: pads its batch to that length


def load(variant: str, old_session: bool = False) -> minilm.MiniLM:
    model = minilm.MiniLM(variant, threads=1)
    saved = minilm.DISABLED_OPTIMIZERS
    if old_session:
        minilm.DISABLED_OPTIMIZERS = ()
    try:
        model.load()
    finally:
        minilm.DISABLED_OPTIMIZERS = saved
    return model


def alone(model: minilm.MiniLM, texts: list[str]) -> np.ndarray:
    return np.concatenate([model.embed([t]) for t in texts])


def batched(model: minilm.MiniLM, texts: list[str], size: int, extra: str | None) -> np.ndarray:
    parts = []
    for start in range(0, len(texts), size):
        chunk = texts[start : start + size]
        vectors = model.embed([*chunk, extra] if extra else chunk)
        parts.append(vectors[: len(chunk)])
    return np.concatenate(parts)


def figures(model: minilm.MiniLM, texts: list[str], reference: np.ndarray) -> dict[str, Any]:
    single = alone(model, texts)
    in_batches = {
        "32 + long text": batched(model, texts, 31, LONG),
        "7 at a time": batched(model, texts, 7, None),
        "padded to 120 tokens": batched(model, texts, 15, PADDING),
    }
    difference = max(float(np.abs(v - single).max()) for v in in_batches.values())
    cos_alone = (single * reference).sum(axis=1)
    cos_batched = (in_batches["32 + long text"] * reference).sum(axis=1)
    return {
        "max_difference": difference,
        "cosine_alone": [float(cos_alone.mean()), float(cos_alone.min())],
        "cosine_batched": [float(cos_batched.mean()), float(cos_batched.min())],
    }


def timed(models: dict[str, minilm.MiniLM], texts: list[str], rounds: int) -> dict[str, Any]:
    wide = [texts[i : i + 32] for i in range(0, len(texts) - 31, 32)]
    single = [[t] for t in texts[:64]]
    best = {k: (np.full(len(wide), np.inf), np.full(len(single), np.inf)) for k in models}
    for _ in range(rounds):
        for name, model in models.items():
            for batches, times in zip((wide, single), best[name], strict=True):
                for index, batch in enumerate(batches):
                    started = time.perf_counter()
                    model.embed(batch)
                    times[index] = min(times[index], time.perf_counter() - started)
    return {
        name: {
            "batch32_items_s": 32 * len(wide) / float(w.sum()),
            "batch1_items_s": len(single) / float(s.sum()),
            "batch1_p50_ms": float(np.median(s)) * 1000,
        }
        for name, (w, s) in best.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    texts = [t for i, t in enumerate(sentences()) if i % 5]  # never int8-static's calibration
    models = {variant: load(variant) for variant in minilm.VARIANTS}
    models["int8-dynamic, old session (old default)"] = load("int8-dynamic", old_session=True)
    reference = alone(models["fp32"], texts)
    results: dict[str, Any] = timed(models, texts, args.rounds)
    for name, model in models.items():
        results[name].update(figures(model, texts, reference))
        results[name]["file_bytes"] = (
            minilm.onnx_path(model.variant).stat().st_size if model.variant != "torch" else 0
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    fp32 = results["fp32"]["batch32_items_s"]
    print(
        "| variant | items/s batch 1 | batch-1 p50 | items/s batch 32 | vs fp32 (32) | "
        "largest difference alone vs batched | cosine to fp32 alone (mean / min) | "
        "batched (mean / min) | file |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in results.items():
        size = f"{r['file_bytes'] / 1e6:.1f} MB" if r["file_bytes"] else "(weights)"
        print(
            f"| {name} | {r['batch1_items_s']:.0f} | {r['batch1_p50_ms']:.2f} ms | "
            f"{r['batch32_items_s']:.0f} | {r['batch32_items_s'] / fp32:.2f}x | "
            f"{r['max_difference']:.1e} | {r['cosine_alone'][0]:.4f} / {r['cosine_alone'][1]:.4f} | "
            f"{r['cosine_batched'][0]:.4f} / {r['cosine_batched'][1]:.4f} | {size} |"
        )


if __name__ == "__main__":
    main()
