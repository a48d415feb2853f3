"""Cache keys carry everything that decides the numbers: model, version, recipe, parameters."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from dlproxy.caching.keys import item_keys
from dlproxy.types import InferenceRequest, ModelSpec, TensorSpec

SPEC = ModelSpec(
    name="minilm",
    version="int8",
    platform="onnxruntime",
    inputs=(TensorSpec("text", "BYTES", (-1,)),),
    outputs=(TensorSpec("embedding", "FP32", (-1, 384)),),
    max_batch_size=32,
    recipe="minilm/int8/r2",
)


def keys(spec: ModelSpec, parameters: dict[str, object] | None = None) -> list[bytes]:
    request = InferenceRequest("minilm", {"text": np.array([b"a", b"b"], dtype=object)})
    return item_keys(request, spec.fingerprint, parameters or {})


def test_a_new_recipe_never_reads_the_old_recipes_entries() -> None:
    old = keys(replace(SPEC, recipe=""))  # what a gateway before recipes stored
    assert not set(keys(SPEC)) & set(old)
    assert not set(keys(SPEC)) & set(keys(replace(SPEC, recipe="minilm/int8/r3")))


def test_version_and_parameters_are_part_of_the_key() -> None:
    assert keys(SPEC) == keys(SPEC)
    assert not set(keys(SPEC)) & set(keys(replace(SPEC, version="fp32")))
    assert not set(keys(SPEC)) & set(keys(SPEC, {"truncate": True}))
    assert len(set(keys(SPEC))) == 2  # one per item
