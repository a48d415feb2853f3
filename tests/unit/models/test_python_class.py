"""PythonClassModel: a plain class with load() and predict(batch) becomes a model."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

import dlproxy
from dlproxy.models.python import PythonClassModel
from dlproxy.models.registry import create_model


class Scaler:
    """Multiplies ``x`` by a factor that ``load`` sets, and counts its calls."""

    inputs: ClassVar[list[tuple[str, str, tuple[int, ...]]]] = [("x", "FP32", (-1, 3))]
    outputs: ClassVar[list[tuple[str, str, tuple[int, ...]]]] = [
        ("y", "FP32", (-1, 3)),
        ("total", "fp64", (-1,)),
    ]
    max_batch_size = 8

    def __init__(self) -> None:
        self.factor = 0.0
        self.calls = 0

    def load(self) -> None:
        self.factor = 3.0

    def predict(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls += 1
        y = batch["x"] * self.factor
        return {"y": y, "total": y.sum(axis=1).astype(np.float64)}


class Bare:
    """No spec attributes and no load(): still servable."""

    def predict(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"echo": batch["anything"]}


class NotAModel:
    pass


def test_spec_from_class_attributes() -> None:
    model = create_model(f"{__name__}:Scaler")
    assert isinstance(model, PythonClassModel)
    spec = model.spec
    assert (spec.name, spec.version, spec.platform) == ("scaler", "1", "python")
    assert [(t.name, t.datatype, t.shape) for t in spec.inputs] == [("x", "FP32", (-1, 3))]
    assert [(t.name, t.datatype, t.shape) for t in spec.outputs] == [
        ("y", "FP32", (-1, 3)),
        ("total", "FP64", (-1,)),
    ]
    assert spec.max_batch_size == 8


def test_load_then_predict() -> None:
    model = PythonClassModel(f"{__name__}:Scaler")
    model.load()
    out = model.predict({"x": np.ones((2, 3), dtype=np.float32)}, {})
    np.testing.assert_allclose(out["y"], 3.0)
    np.testing.assert_allclose(out["total"], [9.0, 9.0])


def test_class_without_spec_or_load() -> None:
    model = PythonClassModel(f"{__name__}:Bare")
    assert (model.spec.name, model.spec.inputs, model.spec.outputs) == ("bare", (), ())
    model.load()
    data = np.array([b"a", b"b"], dtype=object)
    assert model.predict({"anything": data}, {})["echo"].tolist() == [b"a", b"b"]


def test_bad_references() -> None:
    with pytest.raises(TypeError, match="predict"):
        PythonClassModel(f"{__name__}:NotAModel")
    with pytest.raises(ImportError):
        PythonClassModel("no_such_module_here:Thing")


class Tagged(dlproxy.PythonModel):
    """The public contract: setup gets the threads and options, predict the parameters."""

    name = "tagger"
    version = "7"
    inputs = [("x", "FP32", (-1, 2))]
    outputs = [("y", "FP32", (-1, 2))]
    max_batch_size = 4
    closed: ClassVar[list[str]] = []

    def setup(self, threads: int, options: dict[str, Any]) -> None:
        self.threads = threads
        self.scale = float(options["scale"])

    def predict(
        self, batch: dict[str, np.ndarray], parameters: dict[str, Any]
    ) -> dict[str, np.ndarray]:
        return {"y": batch["x"] * self.scale + float(parameters.get("shift", 0)) + self.threads}

    def close(self) -> None:
        Tagged.closed.append("closed")


def test_a_python_model_gets_threads_options_and_parameters_and_is_closed() -> None:
    model = create_model(f"{__name__}:Tagged", threads=3, options={"scale": 2})
    assert isinstance(model, PythonClassModel)
    assert (model.spec.name, model.spec.version, model.spec.max_batch_size) == ("tagger", "7", 4)
    model.load()
    out = model.predict({"x": np.ones((2, 2), np.float32)}, {"shift": 10})
    np.testing.assert_allclose(out["y"], 2 + 10 + 3)
    model.close()
    assert Tagged.closed == ["closed"]


def test_options_are_for_python_models_only() -> None:
    with pytest.raises(TypeError, match=r"takes no options: subclass dlproxy\.PythonModel"):
        create_model(f"{__name__}:Scaler", options={"scale": 2})


def test_the_recipe_follows_the_code_and_the_options_so_caches_never_mix_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = """
import numpy as np
import dlproxy

class Doubler(dlproxy.PythonModel):
    outputs = [("y", "FP32", (-1,))]

    def predict(self, batch, parameters):
        return {"y": batch["x"] * FACTOR}

FACTOR = %s
"""
    monkeypatch.syspath_prepend(str(tmp_path))
    recipes = []
    for factor in ("2", "3"):  # the file is replaced: same module, class, version; other code
        (tmp_path / "doubler.py").write_text(source % factor)
        sys.modules.pop("doubler", None)
        recipes.append(PythonClassModel("doubler:Doubler").spec.recipe)
    assert recipes[0] != recipes[1]
    tuned = PythonClassModel("doubler:Doubler", options={"factor": 4}).spec.recipe
    assert tuned not in recipes  # options decide the numbers too
    assert PythonClassModel("doubler:Doubler").spec.recipe == recipes[1]  # and it is stable
    sys.modules.pop("doubler", None)
