"""Pruning: unstructured zeroes the stated share; structured really shrinks the matrices."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch

from dlproxy.compression.prune import parameter_count, prune_structured, prune_unstructured
from dlproxy.models.builtin import minilm
from dlproxy.models.builtin.corpus import sentences

TEXTS = sentences()[1::35]
CALIBRATION = sentences()[::10]


@pytest.fixture(scope="module")
def original() -> Any:
    return minilm._pooled_bert()


@pytest.fixture(scope="module")
def feeds() -> dict[str, torch.Tensor]:
    tokens = minilm.tokenize(minilm.load_tokenizer(), TEXTS)
    return {k: torch.from_numpy(v) for k, v in tokens.items()}


@pytest.fixture(scope="module")
def calibration() -> dict[str, torch.Tensor]:
    tokens = minilm.tokenize(minilm.load_tokenizer(), CALIBRATION)
    return {k: torch.from_numpy(v) for k, v in tokens.items()}


def embed(model: Any, feeds: dict[str, torch.Tensor]) -> np.ndarray:
    with torch.inference_mode():
        return np.asarray(model(**feeds).numpy())


def test_unstructured_zeroes_the_stated_share_of_each_linear_weight(original: Any) -> None:
    amount = 0.3
    model = copy.deepcopy(original)
    before = {name: p.clone() for name, p in model.named_parameters()}
    stats = prune_unstructured(model, amount)

    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 6 * 6  # Q, K, V, attention output, FFN up and down per layer
    for name, layer in linears:
        weight = layer.weight
        assert int((weight == 0).sum()) == round(amount * weight.numel()), name
        kept = weight != 0  # the survivors are unchanged and larger than every pruned entry
        assert torch.equal(weight[kept], before[f"{name}.weight"][kept])
        assert before[f"{name}.weight"][~kept].abs().max() <= weight[kept].abs().min()
    assert stats.sparsity == pytest.approx(amount, abs=1e-4)
    assert stats.parameters_after == stats.parameters_before == parameter_count(original)
    assert not hasattr(linears[0][1], "weight_orig")  # the mask is baked in: a plain weight


def test_structured_removes_heads_and_neurons_shrinking_every_layer(
    original: Any, feeds: dict[str, torch.Tensor], calibration: dict[str, torch.Tensor]
) -> None:
    model = copy.deepcopy(original)
    stats = prune_structured(model.bert, 0.25, calibration)

    assert stats.heads == (12, 9) and stats.intermediate == (1536, 1152)
    for layer in model.bert.encoder.layer:
        attention = layer.attention.self
        assert attention.num_attention_heads == 9
        for projection in (attention.query, attention.key, attention.value):
            assert tuple(projection.weight.shape) == (9 * 32, 384)
        assert tuple(layer.attention.output.dense.weight.shape) == (384, 9 * 32)
        assert tuple(layer.intermediate.dense.weight.shape) == (1152, 384)
        assert tuple(layer.output.dense.weight.shape) == (384, 1152)
    # 6 layers lose 3 heads x 4 x (32 x 384) weights + 96 Q/K/V biases, and 384 FFN neurons
    # x (2 x 384 weights + 1 bias): nothing else changes size.
    removed = 6 * (3 * 4 * 32 * 384 + 3 * 3 * 32 + 384 * (2 * 384 + 1))
    assert stats.parameters_before - stats.parameters_after == removed
    assert parameter_count(model) == stats.parameters_after
    assert (model.bert.config.num_attention_heads, model.bert.config.intermediate_size) == (9, 1152)

    got, expected = embed(model, feeds), embed(original, feeds)
    assert got.shape == (len(TEXTS), 384)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert (got * expected).sum(axis=1).mean() > 0.8  # degraded, not destroyed (no fine-tuning)


def test_structured_keeps_the_most_important_heads(
    original: Any, calibration: dict[str, torch.Tensor]
) -> None:
    """Pruning more keeps a subset of what pruning less kept: the ranking is one ranking."""
    kept = {}
    for amount in (0.25, 0.5):
        model = copy.deepcopy(original)
        prune_structured(model.bert, amount, calibration)
        query = model.bert.encoder.layer[0].attention.self.query.weight
        kept[amount] = {tuple(row[:4].tolist()) for row in query[::32]}  # each head's first row
    assert len(kept[0.5]) == 6 and kept[0.5] <= kept[0.25]


@pytest.mark.parametrize("amount", [0.0, 1.0, -0.1, 1.5])
def test_amounts_outside_zero_one_are_refused(original: Any, amount: float) -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        prune_unstructured(copy.deepcopy(original), amount)
