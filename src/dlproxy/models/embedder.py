"""Your own embedding model without code: a directory in sentence-transformers' layout, as is.

What the directory holds (what ``SentenceTransformer.save`` and its ONNX backend write)::

    modules.json                 Transformer, Pooling, optional Normalize (in that order)
    sentence_bert_config.json    max_seq_length
    tokenizer.json               a Hugging Face tokenizers file
    1_Pooling/config.json        pooling_mode_mean_tokens | _cls_token | _max_tokens
    onnx/model.onnx              the transformer: input_ids, attention_mask[, token_type_ids]
                                 -> token embeddings [n, tokens, d] (or model.onnx at the top)

It is served like ``minilm``: ``text`` (BYTES, [n]) -> ``embedding`` (FP32, [n, d]), on KServe v2
and ``/v1/embeddings``, with the same chunking of texts longer than the window (``chunking.py``:
windows of ``max_seq_length`` tokens, the special tokens the tokenizer adds around each, window
vectors averaged by token count; normalised after only when the directory normalises). Pooling
and normalisation run here in numpy, as sentence-transformers runs them in torch. The cache
recipe is the digests of the graph and the tokenizer plus the pooling settings, so editing any of
them never serves an old result.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from dlproxy.models import chunking
from dlproxy.models.base import Model, file_digest
from dlproxy.models.builtin.minilm import (
    DISABLED_OPTIMIZERS,
    decode_texts,
    text_windows,
    truncate_parameter,
)
from dlproxy.models.onnx import cpu_session
from dlproxy.types import ModelSpec, TensorSpec

MODULES = "modules.json"
POOLING_MODES = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
}
OVERLAP = 32  # tokens shared by consecutive windows of a long text (as minilm)
MAX_RUN_TOKENS = 16384  # padded tokens per model run: bounds attention memory
MAX_BATCH_SIZE = 256
_MODULE = "sentence_transformers.models."


def is_embedding_directory(path: Path) -> bool:
    """Whether ``path`` is a sentence-transformers directory (``modules.json`` and a tokenizer)."""
    return path.is_dir() and (path / MODULES).is_file() and (path / "tokenizer.json").is_file()


@dataclass(frozen=True)
class Layout:
    """What the directory says about how to embed, read and checked once."""

    graph: Path
    tokenizer: Path
    pooling: str  # mean | cls | max
    normalize: bool
    max_seq_length: int
    dimension: int | None


def read_layout(folder: Path) -> Layout:
    """The directory's settings; ValueError saying what is missing or not supported."""
    modules = _json(folder / MODULES)
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise ValueError(f"{folder / MODULES} must be a list of modules")
    kinds = [str(m.get("type", "")).removeprefix(_MODULE) for m in modules]
    if not kinds or kinds[0] != "Transformer" or "Pooling" not in kinds:
        raise ValueError(
            f"{folder / MODULES} lists {kinds}: a Transformer, then a Pooling module (and "
            "optionally Normalize) are needed"
        )
    unknown = set(kinds) - {"Transformer", "Pooling", "Normalize"}
    if unknown:
        raise ValueError(f"{folder / MODULES}: module(s) {sorted(unknown)} are not supported")
    pooling_dir = folder / str(modules[kinds.index("Pooling")].get("path", ""))
    pooling = _json(pooling_dir / "config.json")
    modes = [mode for key, mode in POOLING_MODES.items() if pooling.get(key)]
    other = [k for k, v in pooling.items() if k.startswith("pooling_mode_") and v]
    if len(modes) != 1 or len(other) != 1:
        raise ValueError(
            f"{pooling_dir / 'config.json'} turns on {other or 'no mode'}: exactly one of "
            f"{', '.join(POOLING_MODES)} is supported"
        )
    graph = next(
        (p for p in (folder / "onnx" / "model.onnx", folder / "model.onnx") if p.is_file()), None
    )
    if graph is None:
        raise ValueError(
            f"{folder} has no onnx/model.onnx (or model.onnx): export the model to ONNX"
        )
    config_path = folder / "sentence_bert_config.json"
    config = _json(config_path) if config_path.is_file() else {}
    max_seq_length = int(config.get("max_seq_length") or 512)
    if max_seq_length < chunking.SPECIAL_TOKENS + OVERLAP + 1:
        raise ValueError(f"{config_path}: max_seq_length {max_seq_length} is too small")
    dimension = pooling.get("word_embedding_dimension")
    return Layout(
        graph=graph,
        tokenizer=folder / "tokenizer.json",
        pooling=modes[0],
        normalize="Normalize" in kinds,
        max_seq_length=max_seq_length,
        dimension=int(dimension) if dimension else None,
    )


def pool_tokens(tokens: np.ndarray, mask: np.ndarray, mode: str, normalize: bool) -> np.ndarray:
    """(n, d) sentence vectors from (n, t, d) token vectors, as sentence-transformers pools."""
    if mode == "cls":
        vectors = tokens[:, 0]
    elif mode == "max":
        masked = np.where(mask[:, :, None] > 0, tokens, np.float32(-1e9))
        vectors = masked.max(axis=1)
    else:
        weights = mask[:, :, None].astype(np.float32)
        vectors = (tokens * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
    vectors = np.asarray(vectors, dtype=np.float32)
    if normalize:
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return vectors


class EmbeddingDirectory(Model):
    """A sentence-transformers directory: ``text`` -> ``embedding``, served as is."""

    def __init__(self, folder: Path, threads: int = 1, name: str | None = None) -> None:
        self.folder = Path(folder)
        self.threads = max(1, int(threads))
        self.layout = read_layout(self.folder)
        self.spec = ModelSpec(
            name=name or self.folder.name.lower(),
            version="1",
            platform="onnxruntime",
            inputs=(TensorSpec("text", "BYTES", (-1,)),),
            outputs=(TensorSpec("embedding", "FP32", (-1, self.layout.dimension or -1)),),
            max_batch_size=MAX_BATCH_SIZE,
            recipe=self._recipe(),
            parameters=("truncate",),
        )
        self._session: Any = None
        self._feeds: tuple[str, ...] = ()
        self._splitter: tuple[Any, chunking.Windowing] | None = None

    def _recipe(self) -> str:
        layout = self.layout
        settings = f"{layout.pooling}/{int(layout.normalize)}/{layout.max_seq_length}/{OVERLAP}"
        files = hashlib.blake2b(
            (file_digest(layout.graph) + file_digest(layout.tokenizer)).encode(), digest_size=16
        ).hexdigest()
        return f"embedding-dir/{settings}/{files}"

    def load(self) -> None:
        """The tokenizer (windows of ``max_seq_length``) and an ONNX Runtime session."""
        from tokenizers import Tokenizer

        try:
            tokenizer = Tokenizer.from_file(str(self.layout.tokenizer))
        except Exception as exc:  # tokenizers raises its own exception type
            raise ValueError(f"{self.layout.tokenizer} does not parse: {exc}") from None
        tokenizer.no_truncation()
        tokenizer.no_padding()
        specials = tokenizer.encode("", add_special_tokens=True).ids
        if len(specials) != chunking.SPECIAL_TOKENS:
            raise ValueError(
                f"{self.layout.tokenizer} adds {len(specials)} special tokens around a text; "
                "windows need a start and an end token"
            )
        pad = next(
            (i for t in ("[PAD]", "<pad>") if (i := tokenizer.token_to_id(t)) is not None), 0
        )
        windowing = chunking.Windowing(
            size=self.layout.max_seq_length,
            overlap=OVERLAP,
            cls_id=specials[0],
            sep_id=specials[-1],
            pad_id=pad,
        )
        self._splitter = (tokenizer, windowing)
        # Every batch has a new shape, as for minilm (whose session settings these are).
        self._session = cpu_session(
            self.layout.graph,
            self.threads,
            memory_patterns=False,
            disabled_optimizers=DISABLED_OPTIMIZERS,
        )
        names = [i.name for i in self._session.get_inputs()]
        missing = {"input_ids", "attention_mask"} - set(names)
        if missing:
            raise ValueError(f"{self.layout.graph} takes {names}; it needs {sorted(missing)}")
        self._feeds = tuple(names)
        dimension = self.embed(["Warm-up: the first run allocates buffers."]).shape[1]
        if self.layout.dimension not in (None, dimension):
            raise ValueError(
                f"the pooling config says {self.layout.dimension} dimensions, the graph gives "
                f"{dimension}"
            )
        output = TensorSpec("embedding", "FP32", (-1, dimension))
        self.spec = replace(self.spec, outputs=(output,))

    def predict(
        self, inputs: dict[str, np.ndarray], parameters: dict[str, Any]
    ) -> dict[str, np.ndarray]:
        truncate = truncate_parameter(parameters)
        return {"embedding": self.embed(decode_texts(inputs["text"]), truncate=truncate)}

    def embed(self, texts: list[str], *, truncate: bool = False) -> np.ndarray:
        """(n, d) float32 vectors; long texts chunked unless ``truncate``."""
        assert self._splitter is not None, "load() first"
        windows = text_windows(self._splitter, texts, truncate)
        width = self.layout.dimension or 0
        return chunking.embed(windows, self._run, MAX_RUN_TOKENS, width, self.layout.normalize)

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        out = self._session.run(None, {name: feeds[name] for name in self._feeds})[0]
        if out.ndim == 2:  # the graph pools itself
            return np.ascontiguousarray(out, dtype=np.float32)
        return pool_tokens(out, feeds["attention_mask"], self.layout.pooling, self.layout.normalize)


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path} is missing") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} cannot be read: {exc}") from None
