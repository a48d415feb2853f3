"""digits: a deterministic, accurate teacher; served outputs; clear errors; one preparation."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dlproxy.compression.distill import DEFAULT_STUDENT
from dlproxy.errors import BadRequest
from dlproxy.models.builtin import digits
from dlproxy.models.builtin.digits import Digits
from dlproxy.models.registry import create_model, model_name

SPLIT = digits.load_split()


@pytest.fixture(scope="module")
def teacher(dlproxy_home: Path) -> Digits:
    model = Digits("teacher")
    model.load()
    return model


def predict(model: Digits, images: np.ndarray) -> dict[str, np.ndarray]:
    return model.predict({"image": images}, {})


def test_split_is_fixed_and_stratified() -> None:
    again = digits.load_split()
    assert SPLIT.train_images.shape == (1348, 64) and SPLIT.test_images.shape == (449, 64)
    assert SPLIT.train_images.dtype == np.float32 and SPLIT.test_labels.dtype == np.int64
    assert np.array_equal(again.test_images, SPLIT.test_images)
    per_class = np.bincount(SPLIT.test_labels) / np.bincount(
        np.concatenate([SPLIT.train_labels, SPLIT.test_labels])
    )
    assert np.allclose(per_class, 0.25, atol=0.01)  # stratified: a quarter of every digit


def test_teacher_training_is_deterministic() -> None:
    first = digits.train_teacher(epochs=2).state_dict()
    second = digits.train_teacher(epochs=2).state_dict()
    other_seed = digits.train_teacher(seed=1, epochs=2).state_dict()
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert not all(torch.equal(first[key], other_seed[key]) for key in first)


def test_teacher_is_accurate_on_the_held_out_split(teacher: Digits) -> None:
    labels = predict(teacher, SPLIT.test_images)["label"]
    accuracy = float((labels == SPLIT.test_labels).mean() * 100)
    assert accuracy >= 97.0
    meta = (digits.variant_dir("teacher") / "meta.json").read_text()
    assert f'"test_accuracy": {round(accuracy, 3)}' in meta


def test_outputs_have_the_declared_shapes_and_types(teacher: Digits) -> None:
    outputs = predict(teacher, SPLIT.test_images[:7])
    probabilities, labels = outputs["probabilities"], outputs["label"]
    assert probabilities.shape == (7, 10) and probabilities.dtype == np.float32
    assert labels.shape == (7,) and labels.dtype == np.int64
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert np.array_equal(labels, probabilities.argmax(axis=1))
    assert [t.name for t in teacher.spec.outputs] == list(outputs)


def test_the_onnx_graph_computes_what_the_torch_teacher_does(teacher: Digits) -> None:
    net = digits.teacher_network()
    with torch.no_grad():
        logits = net(torch.from_numpy(SPLIT.test_images / digits.MAX_PIXEL))
    expected = torch.softmax(logits, dim=1).numpy()
    got = predict(teacher, SPLIT.test_images)["probabilities"]
    assert np.allclose(got, expected, atol=1e-5)


def test_batching_does_not_change_results(teacher: Digits) -> None:
    whole = predict(teacher, SPLIT.test_images[:64])["probabilities"]
    one_by_one = np.concatenate(
        [predict(teacher, row[None])["probabilities"] for row in SPLIT.test_images[:64]]
    )
    assert np.allclose(whole, one_by_one, atol=1e-6)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (np.zeros((2, 63), np.float32), "has shape [2, 63]; digits takes [n, 64]"),
        (np.zeros((2, 8, 8), np.float32), "has shape [2, 8, 8]"),
        (np.array([[b"x"] * 64], dtype=object), "must be FP32 pixel values"),
        (np.full((1, 64), np.nan, np.float32), "NaN or infinite"),
    ],
)
def test_bad_input_is_a_clear_bad_request(
    teacher: Digits, images: np.ndarray, message: str
) -> None:
    with pytest.raises(BadRequest, match=message.replace("[", r"\[").replace("]", r"\]")):
        predict(teacher, images)


def test_missing_input_and_unknown_variant(teacher: Digits) -> None:
    with pytest.raises(BadRequest, match="Missing input 'image'"):
        teacher.predict({"pixels": SPLIT.test_images[:1]}, {})
    with pytest.raises(ValueError, match="choose one of: teacher, student, int8"):
        Digits("fp16")


def test_reference_parsing_and_spec() -> None:
    model = create_model("digits:int8", threads=2)
    assert isinstance(model, Digits) and (model.variant, model.threads) == ("int8", 2)
    assert model_name("digits:student") == "digits"
    assert create_model("digits").variant == digits.DEFAULT_VARIANT  # type: ignore[attr-defined]
    assert [(t.name, t.datatype, t.shape) for t in model.spec.inputs] == [
        ("image", "FP32", (-1, 64))
    ]


def test_default_student_has_at_least_4x_fewer_parameters() -> None:
    teacher = digits.parameter_count(digits.network("teacher"))
    student = digits.parameter_count(digits.network(DEFAULT_STUDENT))
    assert teacher >= 4 * student


@pytest.mark.parametrize("spec", ["cnn", "cnn:0", "cnn:8,16,4", "mlp:", "mlp:a", "resnet:8"])
def test_bad_network_specs_say_what_works(spec: str) -> None:
    with pytest.raises(ValueError, match="use 'teacher', 'cnn:C' or 'cnn:C,H'"):
        digits.network(spec)


def test_int8_keeps_the_accuracy(teacher: Digits) -> None:
    model = Digits("int8")
    model.load()
    labels = predict(model, SPLIT.test_images)["label"]
    teacher_labels = predict(teacher, SPLIT.test_images)["label"]
    accuracy = (labels == SPLIT.test_labels).mean() * 100
    assert accuracy >= (teacher_labels == SPLIT.test_labels).mean() * 100 - 1.0


def test_a_waiting_process_uses_what_the_lock_holder_prepared(
    teacher: Digits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from filelock import FileLock

    prepared = digits.variant_dir("teacher")
    monkeypatch.setenv("DLPROXY_HOME", str(tmp_path))
    folder = digits.variant_dir("teacher")
    folder.mkdir(parents=True)
    result: list[Path] = []
    with FileLock(str(folder / ".prepare.lock")):
        waiter = threading.Thread(
            target=lambda: result.append(digits.export("teacher", quiet=True))
        )
        waiter.start()
        time.sleep(0.5)
        assert waiter.is_alive() and not result  # blocked on the lock, not training
        for name in ("teacher.pt", "meta.json", "digits-teacher.onnx"):  # "the other process"
            shutil.copy2(prepared / name, folder / name)
        stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    waiter.join(10)
    assert result == [digits.onnx_path("teacher")]
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps  # nothing redone
