"""Sentence-transformers directories built from the bundled MiniLM weights, for tests.

The transformer alone (token embeddings out) is exported to ONNX once per cache directory; each
directory gets the package's tokenizer, weights and a pooling config of its own, so
``SentenceTransformer(folder)`` is the reference run of the very same directory.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from dlproxy.models.artifacts import atomic_path

TOP_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "sentence_bert_config.json",
)


def transformer_onnx(home: Path) -> Path:
    """MiniLM's BertModel as ONNX: input_ids, attention_mask, token_type_ids -> token embeddings."""
    target = home / "test-artifacts" / "minilm-transformer.onnx"
    if target.is_file():
        return target
    import torch

    from dlproxy.models.builtin.minilm import export_graph, load_bert

    class Tokens(torch.nn.Module):
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
            )
            return hidden.last_hidden_state

    ids = torch.ones((2, 7), dtype=torch.int64)
    with atomic_path(target) as tmp:
        export_graph(
            Tokens(load_bert()),
            (ids, torch.ones_like(ids), torch.zeros_like(ids)),
            tmp,
            "token_embeddings",
        )
    return target


def build(folder: Path, graph: Path, pooling: str = "mean", normalize: bool = True) -> Path:
    """A sentence-transformers directory at ``folder`` with ``pooling`` (mean, cls or max)."""
    from dlproxy.models.builtin.minilm import model_dir

    source = model_dir()
    folder.mkdir(parents=True)
    for name in TOP_FILES:
        shutil.copy(source / name, folder / name)
    (folder / "onnx").mkdir()
    try:
        os.link(graph, folder / "onnx" / "model.onnx")
    except OSError:
        shutil.copy(graph, folder / "onnx" / "model.onnx")
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    if normalize:
        modules.append(
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.models.Normalize",
            }
        )
        (folder / "2_Normalize").mkdir()
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir()
    modes = {
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_max_tokens": pooling == "max",
        "pooling_mode_mean_sqrt_len_tokens": False,
    }
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 384, **modes})
    )
    return folder


def reference(folder: Path, texts: list[str]) -> object:
    """sentence-transformers' own embeddings of ``texts`` with the directory (torch weights)."""
    import numpy as np

    os.environ["HF_HUB_OFFLINE"] = "1"
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu")
    return np.asarray(model.encode(texts, batch_size=16, convert_to_numpy=True), dtype=np.float32)
