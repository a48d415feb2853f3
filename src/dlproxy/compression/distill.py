"""``dlproxy distill``: distil the digits teacher into a small student, data-parallel over N
processes, and compare teacher, student and int8 teacher (accuracy, size, items/s).

The training is ``dlproxy.models.distillation`` (the same code makes ``digits:student`` at first
use); this module is the command: flags, the measurements and the report.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlproxy.console import Bar
from dlproxy.models.builtin import digits
from dlproxy.models.builtin.digits import DEFAULT_STUDENT, TEACHERS, DistillConfig
from dlproxy.models.distillation import distillation_loss

__all__ = [
    "DEFAULT_STUDENT",
    "TEACHERS",
    "DistillConfig",
    "DistillReport",
    "distill",
    "distillation_loss",
]

SPEED_BATCH_SIZES: tuple[int, ...] = (1, 64)


@dataclass(slots=True)
class Measured:
    """One model in the report: test accuracy (%), size and offline speed (items/s per batch)."""

    name: str
    network: str
    path: str
    accuracy: float
    parameters: int  # the int8 graph has the teacher's, at 8 bits
    file_bytes: int
    items_per_s: dict[int, float] = field(default_factory=dict)


@dataclass(slots=True)
class DistillReport:
    """What ``distill`` did and found; ``to_dict`` is the ``--json`` object."""

    config: DistillConfig
    student_path: Path
    train_seconds: float  # rank 0's training loop
    wall_seconds: float  # the whole command, teacher preparation and measuring included
    history: list[dict[str, float]]  # per epoch: mean loss (all ranks), student test accuracy
    models: list[Measured] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` object. Keys: ``settings`` (every flag; ``out`` resolved),
        ``student_path``, ``train_seconds`` (rank 0's loop), ``wall_seconds``, ``history`` (per
        epoch: ``epoch``, ``loss`` averaged over all ranks, student ``test_accuracy`` in %),
        ``models`` (``teacher``, ``student``, ``int8``: ``network``, ``path``, ``accuracy`` in %
        on the 449 test images, ``parameters``, ``file_bytes``, ``items_per_s`` by batch size as
        a string), ``accuracy_gap`` (teacher - student, points), ``parameter_ratio``.
        """
        settings = asdict(self.config)
        settings["out"] = str(self.config.out_dir)
        models = {m.name: asdict(m) for m in self.models}
        for model in models.values():
            model["items_per_s"] = {str(k): round(v, 1) for k, v in model["items_per_s"].items()}
        data: dict[str, Any] = {
            "settings": settings,
            "student_path": str(self.student_path),
            "train_seconds": round(self.train_seconds, 2),
            "wall_seconds": round(self.wall_seconds, 2),
            "history": self.history,
            "models": models,
        }
        if "teacher" in models and "student" in models:
            teacher, student = models["teacher"], models["student"]
            data["accuracy_gap"] = round(teacher["accuracy"] - student["accuracy"], 3)
            data["parameter_ratio"] = round(teacher["parameters"] / student["parameters"], 2)
        return data


def distill(
    config: DistillConfig,
    progress: bool = True,
    measure: bool = True,
    speed_seconds: float = 0.4,
) -> DistillReport:
    """Train the student, write it to ``config.out_dir``, and (``measure``) compare it with the
    teacher and the int8 teacher: accuracy, size, and items/s timed ``speed_seconds`` per round.
    """
    started = time.perf_counter()
    path, student, result = digits.distill_student(config, progress)
    teacher = digits.teacher_network()
    report = DistillReport(
        config=config,
        student_path=path,
        train_seconds=float(result["seconds"]),
        wall_seconds=0.0,
        history=result["history"],
    )
    if measure:
        report.models = measure_models(
            {
                "teacher": (digits.export("teacher", quiet=True), "teacher", teacher),
                "student": (path, config.student, student),
                "int8": (digits.export("int8", quiet=not progress), "teacher", teacher),
            },
            seconds=speed_seconds,
            progress=progress,
        )
    report.wall_seconds = time.perf_counter() - started
    return report


def measure_models(
    models: dict[str, tuple[Path, str, Any]],
    batch_sizes: tuple[int, ...] = SPEED_BATCH_SIZES,
    rounds: int = 3,
    seconds: float = 0.4,
    progress: bool = True,
) -> list[Measured]:
    """Accuracy and size of each graph, and its speed measured in one run: rounds interleave the
    models (best round kept), so a busy neighbour slows all of them alike rather than one.
    """
    split = digits.load_split()
    classifiers = {
        name: digits.Classifier(path, threads=1) for name, (path, _, _) in models.items()
    }
    measured = {
        name: Measured(
            name=name,
            network=network_name,
            path=str(path),
            accuracy=round(digits.test_accuracy(path), 3),
            parameters=digits.parameter_count(net),
            file_bytes=path.stat().st_size,
        )
        for name, (path, network_name, net) in models.items()
    }
    total = rounds * len(batch_sizes) * len(models)
    with Bar("measuring speed", total, enabled=progress, transient=True, columns=("bar",)) as bar:
        for _ in range(rounds):
            for size in batch_sizes:
                for name, classifier in classifiers.items():
                    rate = _items_per_second(classifier, split.test_images, size, seconds)
                    best = measured[name].items_per_s
                    best[size] = max(best.get(size, 0.0), rate)
                    bar.advance()
    return list(measured.values())


def _items_per_second(
    classifier: digits.Classifier, images: np.ndarray, size: int, seconds: float
) -> float:
    """Items/s of check + classify (what a worker runs) on full batches of ``size`` test images."""
    batches = [images[i : i + size] for i in range(0, len(images) - size + 1, size)]
    classifier.classify(digits.check_images(batches[0]))  # warm-up for this shape
    items, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        classifier.classify(digits.check_images(batches[items // size % len(batches)]))
        items += size
    return items / (time.perf_counter() - began)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``dlproxy distill`` flags; defaults are ``DistillConfig``'s."""
    defaults = DistillConfig()
    parser.add_argument("--teacher", default=defaults.teacher, help="teacher (digits:teacher)")
    parser.add_argument(
        "--student",
        default=defaults.student,
        metavar="SPEC",
        help=f"student network: cnn:C[,H] or mlp:H1[,H2..] (default {defaults.student})",
    )
    parser.add_argument("--nproc", type=int, default=defaults.nproc, help="data-parallel ranks")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--temperature", type=float, default=defaults.temperature)
    parser.add_argument(
        "--alpha", type=float, default=defaults.alpha, help="weight of the soft-target term, 0..1"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--batch-size", type=int, default=defaults.batch_size, help="global batch (all ranks)"
    )
    parser.add_argument("--lr", type=float, default=defaults.lr, help="Adam learning rate")
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="where to write the student (default: digits:student)",
    )
    parser.add_argument(
        "--speed-seconds",
        type=float,
        default=0.4,
        metavar="S",
        help="timing window per model, batch size and round (3 rounds, best kept)",
    )
    parser.add_argument("--json", type=Path, metavar="OUT", help="write the report as JSON")


def run(args: argparse.Namespace) -> int:
    """``dlproxy distill``: train, then print the comparison table (and write ``--json``)."""
    from rich.console import Console

    config = DistillConfig(
        teacher=args.teacher,
        student=args.student,
        nproc=args.nproc,
        epochs=args.epochs,
        temperature=args.temperature,
        alpha=args.alpha,
        seed=args.seed,
        batch_size=args.batch_size,
        lr=args.lr,
        out=args.out,
    )
    try:
        config.check()
    except ValueError as exc:
        print(f"dlproxy distill: {exc}", file=sys.stderr)
        return 2
    if not args.speed_seconds > 0:
        message = f"--speed-seconds must be positive, got {args.speed_seconds}."
        print(f"dlproxy distill: {message}", file=sys.stderr)
        return 2
    report = distill(config, speed_seconds=args.speed_seconds)
    Console().print(_table(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return 0


def _table(report: DistillReport) -> Any:
    from rich.table import Table

    sizes = sorted({size for m in report.models for size in m.items_per_s})
    table = Table(
        title=f"digits: {report.config.student} distilled with {report.config.nproc} process(es), "
        f"{report.config.epochs} epochs in {report.train_seconds:.1f} s",
        caption=f"student written to {report.student_path}",
    )
    for column in ("model", "network", "accuracy", "params", "file"):
        table.add_column(column, justify="left" if column in ("model", "network") else "right")
    for size in sizes:
        table.add_column(f"items/s b{size}", justify="right")
    for m in report.models:
        parameters = f"{m.parameters:,}"
        speeds = [f"{m.items_per_s[size]:,.0f}" for size in sizes]
        size_kib = f"{m.file_bytes / 1024:.0f} KiB"
        table.add_row(m.name, m.network, f"{m.accuracy:.2f}%", parameters, size_kib, *speeds)
    return table
