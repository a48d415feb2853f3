"""Knowledge distillation of the digits teacher into a small student, trained data-parallel.

The loss is ``alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) *
CE(student, label)`` (Hinton et al., 2015): the soft targets carry the teacher's view of which
digits look alike, and ``T^2`` keeps their gradients on the scale of the hard-label term's.

Data parallelism with ``torch.distributed`` (gloo, CPU): one process per rank, each holding a
``DistributedDataParallel`` replica that averages gradients across ranks (an all-reduce) after
every backward pass. A ``DistributedSampler`` hands each rank a disjoint 1/N of each epoch's
shuffled order, and a rank's batch is the global batch / N, so step k of an epoch trains on the
same global batch whatever N is (the shuffle depends only on the seed and the epoch). The 1,348
training images divide evenly over 1, 2 and 4 ranks, so for those N the runs agree to float
precision (summation order); other N make the sampler repeat a few images to even the shares.

The N ranks are started with ``torch.multiprocessing.spawn`` and meet at a free TCP port on
127.0.0.1 (the role of ``MASTER_PORT``); with N=1 the one rank runs in the calling process, which
saves a fresh interpreter and torch import. The teacher's logits on the training images are
computed once, here, and shipped to the ranks: the teacher is fixed and there is no augmentation,
so recomputing them every step would only cost time.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlproxy.models.builtin import digits

DEFAULT_STUDENT = "cnn:8"  # 1,370 parameters: 28x fewer than the teacher (see docs/benchmarks.md)
TEACHERS: tuple[str, ...] = ("digits", "digits:teacher")
SPEED_BATCH_SIZES: tuple[int, ...] = (1, 64)


@dataclass(frozen=True, slots=True)
class DistillConfig:
    """Settings of one distillation; the defaults make ``digits:student``.

    The defaults won a small grid (3 seeds each, docs/benchmarks.md): T=4 with alpha 0.5 beat
    alpha 0.9 and hard labels alone (alpha 0), and 100 epochs at lr 1e-2 beat 60 at 5e-3.
    Changing them calls for a bump of ``digits.RECIPE``, so that cached students are rebuilt.
    """

    teacher: str = "digits:teacher"
    student: str = DEFAULT_STUDENT
    nproc: int = 1
    epochs: int = 100
    temperature: float = 4.0
    alpha: float = 0.5
    seed: int = 0
    batch_size: int = 64  # global: split evenly over the ranks
    lr: float = 1e-2
    out: Path | None = None  # default: the digits:student cache folder

    def check(self) -> None:
        """Raise ValueError naming the first setting that cannot work."""
        if self.teacher not in TEACHERS:
            raise ValueError(
                f"--teacher '{self.teacher}' is not supported: distill runs on 'digits:teacher'."
            )
        digits.network(self.student)  # its error lists the student forms
        if self.nproc < 1:
            raise ValueError(f"--nproc must be at least 1, got {self.nproc}.")
        if self.batch_size < self.nproc or self.batch_size % self.nproc:
            raise ValueError(
                f"--batch-size {self.batch_size} must be a multiple of --nproc {self.nproc}: "
                "each rank takes an equal share of the global batch."
            )
        if self.epochs < 1:
            raise ValueError(f"--epochs must be at least 1, got {self.epochs}.")
        if not self.temperature > 0:
            raise ValueError(f"--temperature must be positive, got {self.temperature}.")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"--alpha is the soft-target weight, 0..1; got {self.alpha}.")
        if not self.lr > 0:
            raise ValueError(f"--lr must be positive, got {self.lr}.")
        if self.out is not None and self.out.exists() and not self.out.is_dir():
            raise ValueError(f"--out {self.out} is a file; give a folder to write the student in.")

    @property
    def out_dir(self) -> Path:
        return self.out if self.out is not None else digits.variant_dir("student")


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


@dataclass(frozen=True, slots=True)
class _Job:
    """What each rank needs: settings, data (pixels scaled to 0..1) and where rank 0 reports."""

    config: DistillConfig
    port: int
    images: np.ndarray
    labels: np.ndarray
    teacher_logits: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    result_path: str
    progress: bool


def distillation_loss(
    student_logits: Any, teacher_logits: Any, labels: Any, temperature: float, alpha: float
) -> Any:
    """Soft-target KL at ``temperature`` (scaled by T^2) blended with hard-label cross-entropy."""
    from torch.nn import functional

    soft = functional.kl_div(
        functional.log_softmax(student_logits / temperature, dim=1),
        functional.log_softmax(teacher_logits / temperature, dim=1),
        log_target=True,
        reduction="batchmean",
    )
    hard = functional.cross_entropy(student_logits, labels)
    return alpha * temperature**2 * soft + (1.0 - alpha) * hard


def distill(
    config: DistillConfig,
    progress: bool = True,
    measure: bool = True,
    speed_seconds: float = 0.4,
) -> DistillReport:
    """Train the student, write it to ``config.out_dir``, and (``measure``) compare it with the
    teacher and the int8 teacher: accuracy, size, and items/s timed ``speed_seconds`` per round.
    """
    import torch

    config.check()
    started = time.perf_counter()
    teacher = digits.teacher_network()
    split = digits.load_split()
    images = split.train_images / digits.MAX_PIXEL
    with torch.no_grad():
        logits = teacher(torch.from_numpy(images)).numpy()
    with tempfile.TemporaryDirectory(prefix="dlproxy-distill-") as scratch:
        job = _Job(
            config=config,
            port=_free_port(),
            images=images,
            labels=split.train_labels,
            teacher_logits=logits,
            test_images=split.test_images / digits.MAX_PIXEL,
            test_labels=split.test_labels,
            result_path=str(Path(scratch) / "rank0.pt"),
            progress=progress,
        )
        _run_ranks(job)
        result = torch.load(job.result_path, weights_only=True)
    student = digits.network(config.student)
    student.load_state_dict(result["state"])
    student.eval()
    path = _write_student(config, student, result["history"])
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
    with _Bar(rounds * len(batch_sizes) * len(models), "measuring speed", progress) as bar:
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


def _run_ranks(job: _Job) -> None:
    """Rank 0..N-1: in this process when N is 1, else one spawned process each."""
    if job.config.nproc == 1:
        _rank(0, job)
        return
    import torch.multiprocessing as mp

    try:
        mp.spawn(_rank, args=(job,), nprocs=job.config.nproc, join=True)
    except mp.ProcessRaisedException as exc:
        raise RuntimeError(f"A distillation rank failed:\n{exc}") from None


def _rank(rank: int, job: _Job) -> None:
    """One data-parallel rank: join the gloo group, train, and (rank 0) save the result."""
    import torch
    import torch.distributed as dist

    # N ranks share the cores: one intra-op thread each, so they do not oversubscribe them.
    with digits.single_threaded():
        dist.init_process_group(
            "gloo",
            init_method=f"tcp://127.0.0.1:{job.port}",
            rank=rank,
            world_size=job.config.nproc,
        )
        try:
            result = _train(rank, job)
            if rank == 0:
                torch.save(result, job.result_path)
        finally:
            dist.destroy_process_group()


def _train(rank: int, job: _Job) -> dict[str, Any]:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader, TensorDataset
    from torch.utils.data.distributed import DistributedSampler

    config = job.config
    dataset = TensorDataset(
        torch.from_numpy(job.images),
        torch.from_numpy(job.labels),
        torch.from_numpy(job.teacher_logits),
    )
    sampler = DistributedSampler(
        dataset, num_replicas=config.nproc, rank=rank, shuffle=True, seed=config.seed
    )
    loader = DataLoader(dataset, batch_size=config.batch_size // config.nproc, sampler=sampler)
    torch.manual_seed(config.seed)  # the same initial weights on every rank (DDP checks them too)
    student = digits.network(config.student)
    model = DistributedDataParallel(student)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.epochs)
    test_images = torch.from_numpy(job.test_images)
    test_labels = torch.from_numpy(job.test_labels)
    history: list[dict[str, float]] = []
    title = f"distill {config.student} ({config.nproc} process{'es' if config.nproc > 1 else ''})"
    began = time.perf_counter()
    with _EpochBars(title, config.epochs, len(loader), job.progress and rank == 0) as bars:
        for epoch in range(config.epochs):
            sampler.set_epoch(epoch)
            model.train()
            totals = torch.zeros(2, dtype=torch.float64)  # loss sum, items: all-reduced below
            for images, labels, teacher_logits in loader:
                loss = distillation_loss(
                    model(images), teacher_logits, labels, config.temperature, config.alpha
                )
                optimizer.zero_grad()
                loss.backward()  # DDP all-reduces the gradients here
                optimizer.step()
                totals += torch.tensor([loss.item() * len(labels), len(labels)])
                bars.step()
            schedule.step()
            dist.all_reduce(totals)
            student.eval()
            with torch.no_grad():
                predicted = student(test_images).argmax(dim=1)
            accuracy = float((predicted == test_labels).double().mean()) * 100
            history.append(
                {
                    "epoch": epoch + 1,
                    "loss": round(float(totals[0] / totals[1]), 5),
                    "test_accuracy": round(accuracy, 3),
                }
            )
            bars.epoch_done(epoch, history[-1]["loss"], accuracy)
    return {
        "state": student.state_dict(),
        "history": history,
        "seconds": time.perf_counter() - began,
    }


def _write_student(config: DistillConfig, student: Any, history: list[dict[str, float]]) -> Path:
    """The served graph, the torch weights, meta.json and dlproxy.json in ``config.out_dir``.

    ``dlproxy.json`` (see models/directory.py) makes ``--model DIR`` or ``--model DIR/<graph>``
    serve the student as ``digits``, version ``student``. The graph is written last.
    """
    import torch

    out = config.out_dir
    target = out / digits.onnx_path("student").name
    with digits.atomic_path(out / "student.pt") as tmp:
        torch.save(student.state_dict(), tmp)
    with digits.atomic_path(out / "dlproxy.json") as tmp:
        served = {"model": "digits", "version": "student", "file": target.name}
        tmp.write_text(json.dumps(served, indent=2) + "\n")
    with digits.atomic_path(target) as tmp:
        digits.export_onnx(student, tmp)
        settings = {k: v for k, v in asdict(config).items() if k != "out"}
        meta = {
            "variant": "student",
            "network": config.student,
            "parameters": digits.parameter_count(student),
            "test_accuracy": round(digits.test_accuracy(tmp), 3),
            "settings": settings,
            "history": history,
        }
        digits.write_meta(target, meta)
    return target


def _free_port() -> int:
    """A port nobody listens on now, for rank 0's rendezvous store."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _EpochBars:
    """On rank 0: an overall bar over epochs and a bar over the current epoch's steps."""

    def __init__(self, title: str, epochs: int, steps: int, enabled: bool) -> None:
        self._title, self._epochs, self._steps = title, epochs, steps
        self._progress: Any = None
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            columns = (
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
            )
            self._progress = Progress(*columns, console=Console(stderr=True))

    def __enter__(self) -> _EpochBars:
        if self._progress is not None:
            self._progress.start()
            self._overall = self._progress.add_task(self._title, total=self._epochs)
            self._epoch = self._progress.add_task(f"epoch 1/{self._epochs}", total=self._steps)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def step(self) -> None:
        if self._progress is not None:
            self._progress.advance(self._epoch)

    def epoch_done(self, epoch: int, loss: float, accuracy: float) -> None:
        if self._progress is None:
            return
        self._progress.update(
            self._overall,
            advance=1,
            description=f"{self._title}: loss {loss:.4f}, test accuracy {accuracy:.2f}%",
        )
        if epoch + 1 < self._epochs:
            self._progress.reset(self._epoch, description=f"epoch {epoch + 2}/{self._epochs}")


class _Bar:
    """A transient rich bar over a known number of steps, or nothing when disabled."""

    def __init__(self, total: int, description: str, enabled: bool) -> None:
        self._progress: Any = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn

            columns = (TextColumn("{task.description}"), BarColumn())
            self._progress = Progress(*columns, console=Console(stderr=True), transient=True)
            self._task = self._progress.add_task(description, total=total)

    def __enter__(self) -> _Bar:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def advance(self) -> None:
        if self._progress is not None:
            self._progress.advance(self._task)


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
