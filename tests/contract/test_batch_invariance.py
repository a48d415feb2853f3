"""Same input, same output: every built-in variant, through the worker's own batch code.

An item's result must not depend on the batch it is computed in: alone, among 32 other
sentences, beside a long (chunked) text, padded to a longer neighbour, or in another order.
Criterion: largest absolute element difference <= 1e-5 (float32 round-off). A variant its module
declares batch-dependent (``BATCH_DEPENDENT``) must really be so: the suite shows it can tell.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from dlproxy import protocol
from dlproxy.models.base import Model
from dlproxy.models.builtin.corpus import sentences
from dlproxy.models.registry import BUILTIN, create_model
from dlproxy.types import ModelSpec
from dlproxy.worker.main import LoadMeter, run_batch

TOLERANCE = 1e-5


def registered_variants() -> Iterator[tuple[str, str, bool]]:
    """(model, variant, declared batch-dependent) for every built-in model and variant."""
    for name, target in sorted(BUILTIN.items()):
        module = importlib.import_module(target.partition(":")[0])
        dependent = getattr(module, "BATCH_DEPENDENT", frozenset())
        for variant in getattr(module, "VARIANTS", ("",)):
            yield name, variant, variant in dependent


VARIANTS = list(registered_variants())


@pytest.fixture(scope="module", params=VARIANTS, ids=[f"{m}:{v}" for m, v, _ in VARIANTS])
def variant(request: pytest.FixtureRequest, dlproxy_home: Path) -> Iterator[tuple[Model, bool]]:
    name, variant, dependent = request.param
    model = create_model(f"{name}:{variant}" if variant else name, threads=1)
    model.load()
    yield model, dependent


def items(spec: ModelSpec, count: int) -> list[dict[str, np.ndarray]]:
    """``count`` one-row inputs for ``spec``: real sentences of mixed length for text models."""
    if spec.inputs and spec.inputs[0].datatype == "BYTES":
        corpus = sentences()
        texts = corpus[:: len(corpus) // (count - 3)][: count - 3]
        texts.append("Hi.")  # far shorter than its neighbours: padded in every batch
        texts.append(" ".join(corpus[:6]))  # ~120 tokens: pads the others to its length
        texts.append(" ".join(corpus[:40]))  # ~800 tokens: chunked into several windows
        return [{spec.inputs[0].name: np.array([t.encode()], dtype=object)} for t in texts]
    rng = np.random.default_rng(0)
    if spec.name == "digits":
        images = rng.integers(0, 17, size=(count, 64)).astype(np.float32)
        return [{"image": images[i : i + 1]} for i in range(count)]
    values = rng.standard_normal((count, 8)).astype(np.float32)  # echo: any input
    return [{"x": values[i : i + 1]} for i in range(count)]


def compute(
    model: Model, batch: list[dict[str, np.ndarray]], borrow: bool = False
) -> dict[str, np.ndarray]:
    """One batch through the wire format and the worker's ``run_batch``, as served."""
    inputs = {
        name: protocol.to_wire(np.concatenate([item[name] for item in batch])) for name in batch[0]
    }
    message = protocol.decode_to_worker(protocol.encode(protocol.Batch(1, inputs, {}, borrow)))
    assert isinstance(message, protocol.Batch)
    reply = protocol.decode_from_worker(protocol.encode(run_batch(model, message, LoadMeter())))
    assert isinstance(reply, protocol.Result), reply
    return {name: protocol.from_wire(tensor) for name, tensor in reply.outputs.items()}


def largest_difference(model: Model, rows: list[dict[str, np.ndarray]]) -> float:
    """Largest element difference between each item alone and the same item in batches."""
    alone = [compute(model, [row]) for row in rows]
    order = list(range(len(rows)))
    batchings = [
        [order],  # all together, long texts included
        [order[::-1]],  # the same batch in reverse order
        [order[i : i + 7] for i in range(0, len(order), 7)],  # other sizes and neighbours
        [[i, *[j for j in order if j != i][:31]] for i in order[:: len(order) // 4]],
    ]
    worst = 0.0
    for batches in batchings:
        for indexes in batches:
            outputs = compute(model, [rows[i] for i in indexes])
            for position, index in enumerate(indexes):
                for name, expected in alone[index].items():
                    got = outputs[name][position : position + 1]
                    if got.dtype.kind in "fc":
                        worst = max(worst, float(np.abs(got - expected).max()))
                    else:
                        assert np.array_equal(got, expected), (name, index)
    return worst


def test_result_does_not_depend_on_the_batch(variant: tuple[Model, bool]) -> None:
    model, dependent = variant
    difference = largest_difference(model, items(model.spec, 40))
    if dependent:
        assert difference > TOLERANCE, "declared batch-dependent, but measured invariant"
    else:
        assert difference <= TOLERANCE, f"{model.spec.version}: {difference:.3g} > {TOLERANCE}"


def test_a_batch_on_borrowed_threads_gets_the_same_result(variant: tuple[Model, bool]) -> None:
    """A lone request on an idle machine runs on more threads (``Model.borrow_threads``): its
    result must be the one it gets on the instance's own thread, alone or batched."""
    model, _ = variant
    if not model.borrow_threads(2):
        pytest.skip(f"{model.spec.name}:{model.spec.version} keeps its own threads")
    rows = items(model.spec, 12)
    for batch in [[row] for row in rows] + [rows]:
        own, borrowed = compute(model, batch), compute(model, batch, borrow=True)
        for name, expected in own.items():
            assert float(np.abs(borrowed[name] - expected).max()) <= TOLERANCE, name


def test_the_default_variants_are_batch_invariant() -> None:
    defaults = {}
    for name, target in BUILTIN.items():
        module = importlib.import_module(target.partition(":")[0])
        defaults[name] = getattr(module, "DEFAULT_VARIANT", "")
        assert defaults[name] not in getattr(module, "BATCH_DEPENDENT", frozenset())
    assert defaults["minilm"] == "int8"


def test_every_variant_has_its_own_recipe(dlproxy_home: Path) -> None:
    """Cache keys carry the recipe: two variants (or two recipes) never share entries."""
    from dlproxy.models.builtin import minilm

    recipes = {minilm.MiniLM(v).spec.fingerprint for v in minilm.VARIANTS}
    assert len(recipes) == len(minilm.VARIANTS)
    assert all(f"r{minilm.RECIPE}" in r for r in recipes)


@pytest.mark.parametrize("name", ["fp32", "int8", "torch"])
def test_padding_to_128_tokens_changes_nothing(name: str, dlproxy_home: Path) -> None:
    """The graph itself: a sentence padded to 128 tokens embeds as the sentence unpadded."""
    from dlproxy.models.builtin import minilm

    model = minilm.MiniLM(name)
    model.load()
    texts = sentences()[:8]
    padded = minilm.load_tokenizer()
    padded.enable_padding(pad_id=0, pad_type_id=0, pad_token="[PAD]", length=128)
    for text in texts:
        unpadded = model._run(minilm.tokenize(minilm.load_tokenizer(), [text]))
        feeds = minilm.tokenize(padded, [text])
        assert feeds["input_ids"].shape == (1, 128)
        assert float(np.abs(model._run(feeds) - unpadded).max()) <= TOLERANCE
