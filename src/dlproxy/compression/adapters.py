"""What ``dlproxy compress`` needs to know about one model, behind one small interface.

The compression methods are generic (an ONNX graph in, an ONNX graph out; or a torch module
pruned then exported); the model-specific parts are: where the original graph and module come
from, how to export a module, which real inputs calibrate and which score quality. A model
plugs in by subclassing ``Adapter`` and adding a line to ``ADAPTERS``.

Data split: calibration (static int8 ranges, structured-pruning scores) and quality never use
the same items, so the reported quality is measured on data the method did not see.
"""

from __future__ import annotations

import json
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from dlproxy.compression.quantize import Feeds, matmuls_reading
from dlproxy.logging import quiet_logger
from dlproxy.models.base import Model
from dlproxy.plugins import import_from_string

if TYPE_CHECKING:  # prune imports torch: only the methods that prune pay for it
    from dlproxy.compression.prune import PruneStats

QUALITY_BATCH = 32


class Adapter(ABC):
    """The model-specific half of a compression run."""

    name: ClassVar[str]
    original: ClassVar[str]  # the served reference of the uncompressed model, e.g. "minilm:fp32"

    @abstractmethod
    def original_onnx(self) -> Path:
        """The original graph (exported first if needed)."""

    @abstractmethod
    def module(self) -> Any:
        """A fresh torch module of the original, in eval mode, for pruning."""

    @abstractmethod
    def export(self, module: Any, target: Path) -> None:
        """Write ``module`` to ``target`` as ONNX with the original graph's inputs and outputs."""

    @abstractmethod
    def calibration(self) -> list[Feeds]:
        """Batches of graph inputs for static quantization (disjoint from the quality items)."""

    @abstractmethod
    def workload(self) -> dict[str, np.ndarray]:
        """``predict`` inputs of the quality items (one row each): timed and scored."""

    @abstractmethod
    def quality(self, original: Model, compressed: Model) -> dict[str, float]:
        """How close ``compressed`` stays to ``original`` on the quality items.

        A key ``original_K`` is the original's own figure for key ``K``, shown beside it.
        """

    def quantize_exclude(self, source: Path) -> list[str]:
        """Nodes that static int8 should leave in float; none unless a model says otherwise."""
        return []

    def prune_structured(self, module: Any, amount: float) -> PruneStats:
        """Remove whole units (heads, neurons, channels) from ``module`` in place."""
        raise ValueError(f"Structured pruning is not available for '{self.name}'.")


class MiniLMAdapter(Adapter):
    """all-MiniLM-L6-v2: calibrate on every 5th corpus sentence, score on the other 280."""

    name = "minilm"
    original = "minilm:fp32"

    def __init__(self) -> None:
        from dlproxy.models.builtin.corpus import sentences

        every = sentences()
        self.calibration_texts = every[::5]
        self.quality_texts = [text for i, text in enumerate(every) if i % 5]

    def original_onnx(self) -> Path:
        from dlproxy.models.builtin import minilm

        return minilm.export("fp32", quiet=True)

    def module(self) -> Any:
        from dlproxy.models.builtin import minilm

        return minilm._pooled_bert()

    def export(self, module: Any, target: Path) -> None:
        import torch

        from dlproxy.models.builtin import minilm

        sample = minilm.tokenize(minilm.load_tokenizer(), ["Export sample.", "A longer sample."])
        args = tuple(torch.from_numpy(sample[name]) for name in minilm.INPUT_NAMES)
        batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
        with warnings.catch_warnings(), torch.no_grad(), quiet_logger("torch.onnx"):
            warnings.simplefilter("ignore")  # exporter chatter, as in the built-in export
            torch.onnx.export(
                module,
                args,
                str(target),
                input_names=list(minilm.INPUT_NAMES),
                output_names=[minilm.GRAPH_OUTPUT],
                dynamic_shapes={name: {0: batch, 1: sequence} for name in minilm.INPUT_NAMES},
                opset_version=18,
                dynamo=True,
                external_data=False,
                verbose=False,
            )

    def calibration(self) -> list[Feeds]:
        from dlproxy.models.builtin import minilm

        tokenizer = minilm.load_tokenizer()
        texts = self.calibration_texts
        return [minilm.tokenize(tokenizer, texts[i : i + 16]) for i in range(0, len(texts), 16)]

    def workload(self) -> dict[str, np.ndarray]:
        texts = np.empty(len(self.quality_texts), dtype=object)
        texts[:] = [text.encode("utf-8") for text in self.quality_texts]
        return {"text": texts}

    def quality(self, original: Model, compressed: Model) -> dict[str, float]:
        """Cosine of each sentence's embedding to the original's (both are unit vectors)."""
        cosines = (
            _outputs(original, self.workload(), "embedding")
            * _outputs(compressed, self.workload(), "embedding")
        ).sum(axis=1)
        return {"cosine_mean": float(cosines.mean()), "cosine_min": float(cosines.min())}

    def quantize_exclude(self, source: Path) -> list[str]:
        """The FFN down-projections (see ``quantize.matmuls_reading``)."""
        from dlproxy.models.builtin import minilm

        config = json.loads((minilm.model_dir() / "config.json").read_text(encoding="utf-8"))
        return matmuls_reading(source, int(config["intermediate_size"]))

    def prune_structured(self, module: Any, amount: float) -> PruneStats:
        """Heads and FFN neurons of every layer, scored on the calibration sentences."""
        import torch

        from dlproxy.compression.prune import prune_structured
        from dlproxy.models.builtin import minilm

        feeds = minilm.tokenize(minilm.load_tokenizer(), self.calibration_texts)
        tensors = {key: torch.from_numpy(value) for key, value in feeds.items()}
        return prune_structured(module.bert, amount, tensors)


class DigitsAdapter(Adapter):
    """The digits CNN teacher: calibrate on training images, score accuracy on the test split."""

    name = "digits"
    original = "digits:teacher"

    def original_onnx(self) -> Path:
        from dlproxy.models.builtin import digits

        return digits.export("teacher", quiet=True)

    def module(self) -> Any:
        from dlproxy.models.builtin import digits

        return digits.teacher_network()

    def export(self, module: Any, target: Path) -> None:
        from dlproxy.models.builtin import digits

        digits.export_onnx(module, target)

    def calibration(self) -> list[Feeds]:
        from dlproxy.models.builtin import digits

        images = digits.load_split().train_images
        return [{"image": images[i : i + 256]} for i in range(0, len(images), 256)]

    def workload(self) -> dict[str, np.ndarray]:
        from dlproxy.models.builtin import digits

        return {"image": digits.load_split().test_images}

    def quality(self, original: Model, compressed: Model) -> dict[str, float]:
        """Percent of the test images labelled correctly, by each model."""
        from dlproxy.models.builtin import digits

        labels = digits.load_split().test_labels
        scores = {}
        for key, model in (("accuracy", compressed), ("original_accuracy", original)):
            predicted = _outputs(model, self.workload(), "label")
            scores[key] = float((predicted == labels).mean() * 100)
        return scores


# name -> "module:Class"; a model not listed here cannot be compressed (yet).
ADAPTERS: dict[str, str] = {
    "minilm": "dlproxy.compression.adapters:MiniLMAdapter",
    "digits": "dlproxy.compression.adapters:DigitsAdapter",
}


def adapter_for(model: str) -> Adapter:
    """The adapter of built-in model ``model``, or a clear error naming the ones there are."""
    if model not in ADAPTERS:
        raise ValueError(f"Cannot compress '{model}': choose one of {', '.join(sorted(ADAPTERS))}.")
    adapter: Adapter = import_from_string(ADAPTERS[model])()
    return adapter


def _outputs(model: Model, inputs: dict[str, np.ndarray], name: str) -> np.ndarray:
    """Output ``name`` of ``model`` over every row of ``inputs``, in batches of 32."""
    count = len(next(iter(inputs.values())))
    parts: Sequence[np.ndarray] = [
        model.predict({k: v[i : i + QUALITY_BATCH] for k, v in inputs.items()}, {})[name]
        for i in range(0, count, QUALITY_BATCH)
    ]
    return np.concatenate(parts)
