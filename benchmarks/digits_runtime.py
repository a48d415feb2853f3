"""Which runtime serves ``digits``: ONNX Runtime vs torch eager, one thread, items/s.

Usage: ``DLPROXY_HOME=.dlproxy-home python benchmarks/digits_runtime.py`` (prepares the teacher
and student if they are not cached). Rounds interleave the four runs, best of 3 kept, so a busy
neighbour slows them alike. Results: docs/benchmarks.md, "Cheaper models: distillation (digits)".
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from dlproxy.models.builtin import digits

Run = Callable[[np.ndarray], object]
ROUNDS, SECONDS, SIZES = 3, 0.5, (1, 64)


def torch_run(net: torch.nn.Module) -> Run:
    def run(images: np.ndarray) -> object:
        with torch.inference_mode():
            logits = net(torch.from_numpy(images) / digits.MAX_PIXEL)
            return torch.softmax(logits, 1).numpy(), logits.argmax(1).numpy()

    return run


def onnx_run(variant: str) -> Run:
    classifier = digits.Classifier(digits.export(variant))
    return lambda images: classifier.classify(digits.check_images(images))


def main() -> None:
    torch.set_num_threads(1)
    images = digits.load_split().test_images
    onnx = {variant: onnx_run(variant) for variant in ("teacher", "student")}  # prepares both
    student = digits.network("cnn:8")
    student.load_state_dict(torch.load(digits.weights_path("student"), weights_only=True))
    runs = {
        "teacher / onnxruntime": onnx["teacher"],
        "teacher / torch": torch_run(digits.teacher_network()),
        "student / onnxruntime": onnx["student"],
        "student / torch": torch_run(student.eval()),
    }
    best: dict[tuple[str, int], float] = {}
    for _ in range(ROUNDS):
        for size in SIZES:
            batches = [images[i : i + size] for i in range(0, len(images) - size + 1, size)]
            for name, run in runs.items():
                run(batches[0])
                items, began = 0, time.perf_counter()
                while time.perf_counter() - began < SECONDS:
                    run(batches[items // size % len(batches)])
                    items += size
                rate = items / (time.perf_counter() - began)
                best[(name, size)] = max(best.get((name, size), 0.0), rate)
    for name in runs:
        rates = "   ".join(f"batch {size}: {best[(name, size)]:>10,.0f}/s" for size in SIZES)
        print(f"{name:22s} {rates}")


if __name__ == "__main__":
    main()
