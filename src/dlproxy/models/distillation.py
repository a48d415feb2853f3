"""Knowledge distillation, trained data-parallel with ``torch.distributed``: the mechanism that
makes a distilled built-in variant (``digits:student``) and that ``dlproxy distill`` drives.

The loss is ``alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) *
CE(student, label)`` (Hinton et al., 2015): the soft targets carry the teacher's view of which
classes look alike, and ``T^2`` keeps their gradients on the scale of the hard-label term's.

Data parallelism (gloo, CPU): one process per rank, each holding a ``DistributedDataParallel``
replica that averages gradients across ranks (an all-reduce) after every backward pass. A
``DistributedSampler`` hands each rank a disjoint 1/N of each epoch's shuffled order, and a rank's
batch is the global batch / N, so step k of an epoch trains on the same global batch whatever N
is (the shuffle depends only on the seed and the epoch). The N ranks are started with
``torch.multiprocessing.spawn`` and meet at a free TCP port on 127.0.0.1; with N=1 the one rank
runs in the calling process. The teacher's logits are computed once by the caller and shipped to
the ranks: the teacher is fixed and there is no augmentation.

This module knows no particular model: the caller passes the data, the teacher's logits and a
function that builds the student network from its spec.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from dlproxy.console import Bar, free_port


class TrainingSettings(Protocol):
    """What training reads of a distillation's settings."""

    @property
    def student(self) -> str: ...
    @property
    def nproc(self) -> int: ...
    @property
    def epochs(self) -> int: ...
    @property
    def temperature(self) -> float: ...
    @property
    def alpha(self) -> float: ...
    @property
    def seed(self) -> int: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def lr(self) -> float: ...


@dataclass(frozen=True, slots=True)
class TrainingData:
    """Training inputs and labels, the teacher's logits on them, and a test split to score."""

    images: np.ndarray
    labels: np.ndarray
    teacher_logits: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def train(
    settings: TrainingSettings,
    data: TrainingData,
    network: Callable[[str], Any],
    progress: bool = False,
) -> dict[str, Any]:
    """Train ``network(settings.student)`` on ``data`` over ``settings.nproc`` ranks; returns rank
    0's ``state`` (weights), ``history`` (per epoch: loss, test accuracy) and ``seconds``."""
    import torch

    with tempfile.TemporaryDirectory(prefix="dlproxy-distill-") as scratch:
        job = _Job(
            config=settings,
            network=network,
            port=free_port(),
            images=data.images,
            labels=data.labels,
            teacher_logits=data.teacher_logits,
            test_images=data.test_images,
            test_labels=data.test_labels,
            result_path=str(Path(scratch) / "rank0.pt"),
            progress=progress,
        )
        _run_ranks(job)
        result: dict[str, Any] = torch.load(job.result_path, weights_only=True)
    return result


@contextmanager
def single_threaded() -> Iterator[None]:
    """torch on one intra-op thread for the block: the same sums in the same order everywhere."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


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


@dataclass(frozen=True, slots=True)
class _Job:
    """What each rank needs: settings, data (pixels scaled to 0..1) and where rank 0 reports."""

    config: TrainingSettings
    network: Callable[[str], Any]  # a module-level function: spawned ranks unpickle it
    port: int
    images: np.ndarray
    labels: np.ndarray
    teacher_logits: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    result_path: str
    progress: bool


def _run_ranks(job: _Job) -> None:
    """Rank 0..N-1: in this process when N is 1, else one spawned process each."""
    if job.config.nproc == 1:
        _rank(0, job)
        return
    from torch.multiprocessing.spawn import ProcessRaisedException, spawn

    try:
        spawn(_rank, args=(job,), nprocs=job.config.nproc, join=True)
    except ProcessRaisedException as exc:
        raise RuntimeError(f"A distillation rank failed:\n{exc}") from None


def _rank(rank: int, job: _Job) -> None:
    """One data-parallel rank: join the gloo group, train, and (rank 0) save the result."""
    import torch
    import torch.distributed as dist

    # N ranks share the cores: one intra-op thread each, so they do not oversubscribe them.
    with single_threaded():
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
    sampler: DistributedSampler[Any] = DistributedSampler(
        dataset, num_replicas=config.nproc, rank=rank, shuffle=True, seed=config.seed
    )
    loader = DataLoader(dataset, batch_size=config.batch_size // config.nproc, sampler=sampler)
    torch.manual_seed(config.seed)  # the same initial weights on every rank (DDP checks them too)
    student = job.network(config.student)
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


class _EpochBars:
    """On rank 0: an overall bar over epochs and a bar over the current epoch's steps."""

    def __init__(self, title: str, epochs: int, steps: int, enabled: bool) -> None:
        self._title, self._epochs = title, epochs
        self._bar = Bar(title, epochs, enabled=enabled, columns=("bar", "count", "elapsed"))
        self._epoch = self._bar.add(f"epoch 1/{epochs}", steps)

    def __enter__(self) -> _EpochBars:
        self._bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._bar.__exit__(*exc)

    def step(self) -> None:
        self._bar.advance(task=self._epoch)

    def epoch_done(self, epoch: int, loss: float, accuracy: float) -> None:
        description = f"{self._title}: loss {loss:.4f}, test accuracy {accuracy:.2f}%"
        self._bar.update(advance=1, description=description)
        if epoch + 1 < self._epochs:
            self._bar.reset(self._epoch, f"epoch {epoch + 2}/{self._epochs}")
