"""minilm cut into stages in one process: the layers are shared out, every K gives the unsplit
model's embeddings, and models or variants that cannot be cut are refused with a way out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dlproxy.models.builtin.corpus import sentences
from dlproxy.models.builtin.minilm import MiniLM, load_bert
from dlproxy.models.builtin.minilm_stages import layer_ranges
from dlproxy.models.stages import check_stages, create_stage
from dlproxy.settings import Settings

TEXTS = [*sentences()[:12], " ".join(sentences()[:60])]  # the last one is 5 windows


def test_layers_are_shared_out_consecutively_and_evenly() -> None:
    assert layer_ranges(2) == [range(0, 3), range(3, 6)]
    assert layer_ranges(4) == [range(0, 2), range(2, 4), range(4, 5), range(5, 6)]
    for count in range(2, 7):
        layers = [i for part in layer_ranges(count) for i in part]
        assert layers == list(range(6))


@pytest.mark.parametrize(
    ("reference", "count", "message"),
    [
        ("minilm", 2, "minilm:torch"),
        ("minilm:fp32", 2, "minilm:torch"),
        ("minilm:torch", 7, "2-6"),
        ("echo", 2, "cannot be split"),
    ],
)
def test_what_cannot_be_cut_is_refused_with_a_way_out(
    reference: str, count: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        check_stages(reference, count)
    with pytest.raises(ValueError, match=message):
        Settings(models=[reference], pipeline_stages=count)


def test_settings_share_the_cores_among_stage_processes() -> None:
    settings = Settings(models=["minilm:torch"], pipeline_stages=2, instances=1).resolved()
    assert settings.threads is not None and settings.threads >= 1
    check_stages("minilm:torch", 1)  # one stage is a plain instance: nothing to check


@pytest.fixture(scope="module")
def unsplit(dlproxy_home: Path) -> np.ndarray:
    model = MiniLM("torch", threads=1)
    model.load()
    return model.embed(TEXTS)


@pytest.mark.parametrize("count", [2, 3])
def test_stages_in_a_row_compute_the_unsplit_model(count: int, unsplit: np.ndarray) -> None:
    stages = [create_stage("minilm:torch", i, count, threads=1) for i in range(count)]
    tensors = {"text": np.array([t.encode() for t in TEXTS], dtype=object)}
    for stage in stages:
        stage.load()
        tensors = stage.run(tensors, {})
    assert list(tensors) == ["embedding"]
    np.testing.assert_allclose(tensors["embedding"], unsplit, atol=1e-5)
    # Together the stages hold the model's weights once; none holds them all.
    whole = sum(p.numel() * 4 for p in load_bert().parameters())
    held = [stage.parameter_bytes() for stage in stages]  # type: ignore[attr-defined]
    assert sum(held) == whole and max(held) < whole
