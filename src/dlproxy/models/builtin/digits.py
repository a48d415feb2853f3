"""``digits``: an 8x8 handwritten-digit classifier trained at first use on scikit-learn's digits.

Input ``image`` (FP32, [n, 64], pixel values 0..16 as in ``sklearn.datasets.load_digits``) ->
``probabilities`` (FP32, [n, 10]) and ``label`` (INT64, [n]). Nothing is downloaded: the 1,797
images ship inside scikit-learn. A fixed, stratified split keeps 449 of them (25%) for testing;
the 1,348 training images divide evenly over 1, 2 or 4 data-parallel ranks (no padding), which
lets ``dlproxy distill`` train on exactly the same global batches whatever the rank count.

Variants, each cached in ``home()/models/digits/<variant>/`` as ``digits-<variant>.onnx`` (what is
served), the torch weights and a ``meta.json`` (test accuracy, parameters, settings):

- ``teacher``: a small CNN (two 3x3 convolutions, 38k parameters) trained for 30 epochs with
  random one-pixel shifts, seeded and single-threaded so that every machine gets the same weights
  (~2 s on one core).
- ``student``: the teacher distilled into a much smaller network by ``dlproxy distill`` (default
  settings, one process) when it is first asked for.
- ``int8``: the teacher's graph after ONNX Runtime's static quantization (QDQ, per-channel
  7-bit weights, calibrated on the training images).

Preparing a variant is file-locked, so several workers starting at once train it only once, and
its graph is written last and atomically, so a reader never sees half a model. Serving runs the
graphs with ONNX Runtime (the scaling by 1/16, softmax and argmax are inside the graph): faster
than torch eager at every batch size we measured (see docs/benchmarks.md).
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from dlproxy.errors import BadRequest
from dlproxy.logging import quiet_logger
from dlproxy.models.artifacts import Step, atomic_path, locked, preparing
from dlproxy.models.base import Model, choose_variant, file_digest, home
from dlproxy.models.distillation import single_threaded
from dlproxy.models.onnx import cpu_session
from dlproxy.types import ModelSpec, TensorSpec

VARIANTS: tuple[str, ...] = ("teacher", "student", "int8")
DEFAULT_VARIANT = "teacher"
PIXELS = 64
CLASSES = 10
MAX_PIXEL = 16.0
MAX_BATCH_SIZE = 1024
SEED = 0
TEST_SIZE = 449  # 25% of the 1,797 images (rounded down), stratified by class
# Bump when the data, networks, training or distillation defaults change: caches are rebuilt.
RECIPE = 3
TEACHER_EPOCHS = 30
TEACHER_BATCH = 64
TEACHER_LR = 3e-3
OUTPUTS: tuple[str, ...] = ("probabilities", "label")


@dataclass(frozen=True, slots=True)
class Split:
    """The fixed train/test split: images as FP32 pixels 0..16, labels as INT64."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def load_split() -> Split:
    """scikit-learn's bundled digits, split the same way on every machine."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = np.asarray(data.data, dtype=np.float32)
    labels = np.asarray(data.target, dtype=np.int64)
    train_x, test_x, train_y, test_y = train_test_split(
        images, labels, test_size=TEST_SIZE, random_state=SEED, stratify=labels
    )
    return Split(train_x, train_y, test_x, test_y)


def network(spec: str) -> Any:
    """An untrained torch network over pixels scaled to 0..1: ``teacher``, ``cnn:C[,H]``, ``mlp:H[,H..]``.

    ``cnn:C[,H]`` is one 3x3 convolution with C channels, 2x2 max-pooling, an optional hidden layer
    of H units, then the 10 logits; ``mlp:H1,H2,..`` is fully connected with those hidden widths.
    """
    from torch import nn

    kind, _, widths = spec.partition(":")
    if kind == "teacher" and not widths:
        return nn.Sequential(
            nn.Unflatten(1, (1, 8, 8)),
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, 64),
            nn.ReLU(),
            nn.Linear(64, CLASSES),
        )
    sizes = _widths(spec, widths)
    if kind == "cnn" and len(sizes) in (1, 2):
        layers: list[nn.Module] = [
            nn.Unflatten(1, (1, 8, 8)),
            nn.Conv2d(1, sizes[0], 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        ]
        width = sizes[0] * 4 * 4
    elif kind == "mlp" and sizes:
        layers, width = [], PIXELS
    else:
        raise ValueError(_network_help(spec))
    for hidden in sizes[1:] if kind == "cnn" else sizes:
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, CLASSES))


def parameter_count(net: Any) -> int:
    """Trainable parameters of a torch network."""
    return int(sum(p.numel() for p in net.parameters() if p.requires_grad))


def variant_dir(variant: str) -> Path:
    """Where a variant's files are cached."""
    return home() / "models" / "digits" / variant


def onnx_path(variant: str) -> Path:
    """The graph a variant is served from."""
    return variant_dir(variant) / f"digits-{variant}.onnx"


def weights_path(variant: str) -> Path:
    """The torch state dict of ``teacher`` or ``student``."""
    return variant_dir(variant) / f"{variant}.pt"


def export(variant: str | None = None, *, quiet: bool = False) -> Path:
    """Prepare ``variant`` once (file-locked) and return its graph's path."""
    variant = _check_variant(variant)
    if is_current(variant):
        return onnx_path(variant)
    with preparing(f"digits:{variant}", quiet) as step:
        return _ensure(variant, step, quiet)


def teacher_network() -> Any:
    """The trained teacher as a torch network in eval mode (training it first if needed)."""
    import torch

    export("teacher", quiet=True)
    net = network("teacher")
    net.load_state_dict(torch.load(weights_path("teacher"), weights_only=True))
    return net.eval()


def train_teacher(seed: int = SEED, epochs: int = TEACHER_EPOCHS) -> Any:
    """Train the teacher CNN from ``seed``: single-threaded, hence the same weights everywhere."""
    import torch
    from torch.nn import functional

    split = load_split()
    images = torch.from_numpy(split.train_images / MAX_PIXEL)
    labels = torch.from_numpy(split.train_labels)
    with single_threaded():
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        net = network("teacher")
        optimizer = torch.optim.Adam(net.parameters(), lr=TEACHER_LR)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
        for _ in range(epochs):
            order = torch.randperm(len(images), generator=generator)
            for start in range(0, len(images), TEACHER_BATCH):
                index = order[start : start + TEACHER_BATCH]
                batch = shift(images[index], generator)
                loss = functional.cross_entropy(net(batch), labels[index])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            schedule.step()
    return net.eval()


def shift(images: Any, generator: Any) -> Any:
    """Each 8x8 image moved by up to one pixel in x and y (zeros shifted in): cheap augmentation."""
    import torch
    from torch.nn import functional

    n = len(images)
    padded = functional.pad(images.reshape(n, 8, 8), (1, 1, 1, 1))
    dx = torch.randint(0, 3, (n,), generator=generator)
    dy = torch.randint(0, 3, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(8))[:, :, None]
    cols = (dx[:, None] + torch.arange(8))[:, None, :]
    return padded[torch.arange(n)[:, None, None], rows, cols].reshape(n, PIXELS)


def export_onnx(net: Any, target: Path) -> None:
    """Write ``net`` at ``target`` as a served graph (raw pixels in; probabilities and label out)."""
    import torch

    class Served(torch.nn.Module):
        """Scaling, softmax and argmax inside the graph: the worker only feeds pixels."""

        def __init__(self, logits: torch.nn.Module) -> None:
            super().__init__()
            self.logits = logits

        def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = self.logits(image / MAX_PIXEL)
            return torch.softmax(logits, dim=1), torch.argmax(logits, dim=1)

    sample = torch.zeros(2, PIXELS)  # two rows, so the batch axis is not specialised to 1
    with warnings.catch_warnings(), torch.no_grad(), quiet_logger("torch.onnx"):
        warnings.simplefilter("ignore")  # exporter chatter (axis naming, deprecations)
        torch.onnx.export(
            Served(net).eval(),
            (sample,),
            str(target),
            input_names=["image"],
            output_names=list(OUTPUTS),
            dynamic_shapes={"image": {0: torch.export.Dim("batch")}},
            opset_version=18,
            dynamo=True,
            external_data=False,
            verbose=False,
        )


def test_accuracy(path: Path) -> float:
    """Percent of the held-out test images that the graph at ``path`` labels correctly."""
    split = load_split()
    _, labels = Classifier(path).classify(split.test_images)
    return float((labels == split.test_labels).mean() * 100)


def write_meta(variant_path: Path, meta: dict[str, Any]) -> None:
    """``meta.json`` beside a graph: what it is, how well it does, and the recipe that made it."""
    with atomic_path(variant_path.parent / "meta.json") as tmp:
        tmp.write_text(json.dumps({**meta, "recipe": RECIPE}, indent=2) + "\n")


def is_current(variant: str) -> bool:
    """The variant's graph is cached and was made by this code's recipe (else it is rebuilt)."""
    try:
        meta = json.loads((variant_dir(variant) / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return onnx_path(variant).is_file() and meta.get("recipe") == RECIPE


class Classifier:
    """One exported digits graph in an ONNX Runtime session."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"No digits graph at {path}.")
        self.path = Path(path)
        self._session = cpu_session(self.path, threads)

    def classify(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities [n, 10] FP32, labels [n] INT64) for checked FP32 pixels [n, 64]."""
        if len(images) == 0:
            return np.zeros((0, CLASSES), np.float32), np.zeros(0, np.int64)
        probabilities, labels = self._session.run(list(OUTPUTS), {"image": images})
        return probabilities, labels.astype(np.int64, copy=False)


class Digits(Model):
    """The digits classifier: ``image`` (FP32, [n, 64]) -> ``probabilities`` and ``label``."""

    def __init__(self, variant: str | None = None, threads: int = 1) -> None:
        self.variant = _check_variant(variant)
        self.threads = max(1, int(threads))
        self.spec = ModelSpec(
            name="digits",
            version=self.variant,
            platform="onnxruntime",
            inputs=(TensorSpec("image", "FP32", (-1, PIXELS)),),
            outputs=(
                TensorSpec("probabilities", "FP32", (-1, CLASSES)),
                TensorSpec("label", "INT64", (-1,)),
            ),
            max_batch_size=MAX_BATCH_SIZE,
            parameters=(),
        )
        self._classifier: Classifier | None = None

    def load(self) -> None:
        """Prepare the variant if needed, open its session and warm it up; the recipe names the
        graph by digest (weights trained here may differ by machine)."""
        path = export(self.variant)
        self._classifier = Classifier(path, self.threads)
        self.spec = replace(
            self.spec, recipe=f"digits/{self.variant}/r{RECIPE}/{file_digest(path)}"
        )
        self._classifier.classify(np.zeros((1, PIXELS), np.float32))

    def predict(
        self, inputs: dict[str, np.ndarray], parameters: dict[str, Any]
    ) -> dict[str, np.ndarray]:
        """Check the pixels, then classify the batch in one run."""
        if self._classifier is None:
            raise RuntimeError("Digits.predict called before load().")
        if "image" not in inputs:
            raise BadRequest(f"Missing input 'image'; digits takes 'image' (FP32, [n, {PIXELS}]).")
        probabilities, labels = self._classifier.classify(check_images(inputs["image"]))
        return {"probabilities": probabilities, "label": labels}


def check_images(images: np.ndarray) -> np.ndarray:
    """FP32 [n, 64] with finite values, or a BadRequest that says what to send instead."""
    array = np.asarray(images)
    if array.ndim != 2 or array.shape[1] != PIXELS:
        raise BadRequest(
            f"Input 'image' has shape {list(array.shape)}; digits takes [n, {PIXELS}]: "
            "each row an 8x8 image flattened, pixel values 0..16."
        )
    if array.dtype.kind not in "fiu":
        raise BadRequest(f"Input 'image' must be FP32 pixel values, got {array.dtype}.")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise BadRequest("Input 'image' holds NaN or infinite values; send pixels 0..16.")
    return array


def _widths(spec: str, text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",")] if text else []
    except ValueError:
        raise ValueError(_network_help(spec)) from None
    if any(size < 1 for size in sizes):
        raise ValueError(_network_help(spec))
    return sizes


def _network_help(spec: str) -> str:
    return (
        f"Unknown network '{spec}': use 'teacher', 'cnn:C' or 'cnn:C,H' (C conv channels, "
        "H hidden units), or 'mlp:H1[,H2,..]' (hidden widths), e.g. 'cnn:8' or 'mlp:64'."
    )


DEFAULT_STUDENT = "cnn:8"  # 1,370 parameters: 28x fewer than the teacher (see docs/benchmarks.md)
TEACHERS: tuple[str, ...] = ("digits", "digits:teacher")


@dataclass(frozen=True, slots=True)
class DistillConfig:
    """Settings of one distillation; the defaults make ``digits:student``.

    The defaults won a small grid (3 seeds each, docs/benchmarks.md): T=4 with alpha 0.5 beat
    alpha 0.9 and hard labels alone (alpha 0), and 100 epochs at lr 1e-2 beat 60 at 5e-3.
    Changing them calls for a bump of ``RECIPE``, so that cached students are rebuilt.
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
        network(self.student)  # its error lists the student forms
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
        return self.out if self.out is not None else variant_dir("student")


def distill_student(
    config: DistillConfig, progress: bool = False
) -> tuple[Path, Any, dict[str, Any]]:
    """Distill the teacher into ``config.student`` and write it to ``config.out_dir``; returns the
    served graph's path, the student network and the training result (history, seconds)."""
    import torch

    from dlproxy.models.distillation import TrainingData, train

    config.check()
    teacher = teacher_network()
    split = load_split()
    images = split.train_images / MAX_PIXEL
    with torch.no_grad():
        logits = teacher(torch.from_numpy(images)).numpy()
    data = TrainingData(
        images, split.train_labels, logits, split.test_images / MAX_PIXEL, split.test_labels
    )
    result = train(config, data, network, progress)
    student = network(config.student)
    student.load_state_dict(result["state"])
    student.eval()
    return _write_student(config, student, result["history"]), student, result


def _write_student(config: DistillConfig, student: Any, history: list[dict[str, float]]) -> Path:
    """The served graph, the torch weights, meta.json and dlproxy.json in ``config.out_dir``.

    ``dlproxy.json`` (see models/directory.py) makes ``--model DIR`` or ``--model DIR/<graph>``
    serve the student as ``digits``, version ``student``. The graph is written last.
    """
    import torch

    out = config.out_dir
    target = out / onnx_path("student").name
    with atomic_path(out / "student.pt") as tmp:
        torch.save(student.state_dict(), tmp)
    with atomic_path(out / "dlproxy.json") as tmp:
        served = {"model": "digits", "version": "student", "file": target.name}
        tmp.write_text(json.dumps(served, indent=2) + "\n")
    with atomic_path(target) as tmp:
        export_onnx(student, tmp)
        settings = {k: v for k, v in asdict(config).items() if k != "out"}
        meta = {
            "variant": "student",
            "network": config.student,
            "parameters": parameter_count(student),
            "test_accuracy": round(test_accuracy(tmp), 3),
            "settings": settings,
            "history": history,
        }
        write_meta(target, meta)
    return target


def _check_variant(variant: str | None) -> str:
    return choose_variant("digits", variant, VARIANTS, DEFAULT_VARIANT)


def _ensure(variant: str, step: Step, quiet: bool) -> Path:
    """Prepare ``variant`` under its lock unless another process did while we waited."""
    target = onnx_path(variant)
    with locked(target.parent / ".prepare.lock", lambda: step("waiting for another process")):
        if is_current(variant):
            return target
        if variant == "teacher":
            _prepare_teacher(step)
        elif variant == "int8":
            _ensure("teacher", step, quiet)
            _prepare_int8(step)
        else:
            _ensure("teacher", step, quiet)
            step("distilling the student (first use)")
            distill_student(DistillConfig(out=variant_dir("student")), progress=not quiet)
    return target


def _prepare_teacher(step: Step) -> None:
    import torch

    step("training the teacher")
    started = time.perf_counter()
    net = train_teacher()
    seconds = time.perf_counter() - started
    with atomic_path(weights_path("teacher")) as tmp:
        torch.save(net.state_dict(), tmp)
    step("exporting to ONNX")
    with atomic_path(onnx_path("teacher")) as tmp:
        export_onnx(net, tmp)
        step("checking the export")
        meta = {
            "variant": "teacher",
            "network": "teacher",
            "parameters": parameter_count(net),
            "test_accuracy": round(test_accuracy(tmp), 3),
            "seed": SEED,
            "epochs": TEACHER_EPOCHS,
            "train_seconds": round(seconds, 2),
        }
        write_meta(onnx_path("teacher"), meta)


def _prepare_int8(step: Step) -> None:
    """Static QDQ int8 with per-channel weights, calibrated on the training images."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Images(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self, images: np.ndarray) -> None:
            self._batches = iter([{"image": images[i : i + 64]} for i in range(0, len(images), 64)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    step("quantizing to int8 (static, calibrated)")
    split = load_split()
    with atomic_path(onnx_path("int8")) as tmp, quiet_logger(""):  # "consider pre-processing"
        quantize_static(
            str(onnx_path("teacher")),
            str(tmp),
            Images(split.train_images),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=True,  # 7-bit weights: no int16 saturation on non-VNNI x86 (rowwise.py)
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
        )
        step("checking the quantized graph")
        accuracy = round(test_accuracy(tmp), 3)
        meta = {"variant": "int8", "source": "teacher", "test_accuracy": accuracy}
        write_meta(onnx_path("int8"), meta)
