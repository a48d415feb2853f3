"""all-MiniLM-L6-v2 cut into pipeline stages: consecutive encoder layers of the torch ``BertModel``.

Stage 0 tokenizes (into windows: long texts are chunked as in ``minilm``), embeds and runs the
first layers; the last stage runs the last layers, mean-pools, normalises, and pools each text's
windows. The six layers are shared out as evenly as possible (K=2: 3+3, K=3: 2+2+2). Between
stages travel the hidden states (windows, tokens, 384) with the 2-d attention mask and the
window -> text bookkeeping. Each stage builds only its own layers and reads only their tensors
from the checkpoint, which is the point of model parallelism: no process holds the whole model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dlproxy.models import chunking
from dlproxy.models.builtin import minilm
from dlproxy.models.stages import ModelStage, Tensors

LAYERS = 6  # num_hidden_layers of all-MiniLM-L6-v2


def layer_ranges(count: int) -> list[range]:
    """The encoder layers of each of ``count`` stages, consecutive and as even as possible."""
    return [range(int(part[0]), int(part[-1]) + 1) for part in np.array_split(range(LAYERS), count)]


class MiniLMStage(ModelStage):
    """One stage of ``minilm:torch``."""

    @staticmethod
    def check(variant: str | None, count: int) -> None:
        """Only the torch model has layers to share out; at most one layer per stage."""
        if (variant or minilm.DEFAULT_VARIANT) != "torch":
            raise ValueError(
                f"minilm:{variant or minilm.DEFAULT_VARIANT} is one ONNX graph and cannot be split "
                "into pipeline stages: serve --model minilm:torch"
            )
        if not 2 <= count <= LAYERS:
            raise ValueError(f"minilm has {LAYERS} layers: pipeline stages must be 2-{LAYERS}")

    def __init__(self, variant: str | None, index: int, count: int, threads: int = 1) -> None:
        self.check(variant, count)
        super().__init__(variant, index, count, threads)
        self.layers = layer_ranges(count)[index]
        self.spec = minilm.MiniLM("torch").spec
        self._splitter: tuple[Any, chunking.Windowing] | None = None
        self._embeddings: Any = None
        self._encoder_layers: Any = None
        self._config: Any = None

    def load(self) -> None:
        """Build this stage's layers (and the embeddings for stage 0) and read only their tensors
        from the checkpoint, then warm up: no stage ever holds the whole model."""
        import torch
        from safetensors import safe_open
        from transformers import BertConfig
        from transformers.models.bert.modeling_bert import BertEmbeddings, BertLayer

        torch.set_num_threads(self.threads)
        config = BertConfig.from_pretrained(str(minilm.model_dir()))
        config._attn_implementation = "sdpa"  # what BertModel.from_pretrained picks here
        self._config = config
        self._encoder_layers = torch.nn.ModuleList(BertLayer(config, i) for i in self.layers)
        # checkpoint prefix -> prefix in this stage's modules
        wanted = {f"encoder.layer.{i}.": f"layers.{n}." for n, i in enumerate(self.layers)}
        parts: dict[str, torch.nn.Module] = {"layers": self._encoder_layers}
        if self.first:
            self._splitter = minilm.load_splitter()
            self._embeddings = BertEmbeddings(config)
            parts["embeddings"] = self._embeddings
            wanted["embeddings."] = "embeddings."
        state: dict[str, torch.Tensor] = {}
        with safe_open(str(minilm.model_dir() / "model.safetensors"), "pt") as checkpoint:
            for key in checkpoint.keys():
                prefix = next((p for p in wanted if key.startswith(p)), None)
                if prefix is not None:
                    state[wanted[prefix] + key[len(prefix) :]] = checkpoint.get_tensor(key)
        for name, module in parts.items():
            own = {
                k.removeprefix(f"{name}."): v for k, v in state.items() if k.startswith(f"{name}.")
            }
            own.pop("position_ids", None)  # a buffer the module makes itself
            module.load_state_dict(own, strict=True)
            module.eval()
        self.run(self._warm_up_input(), {})

    def parameter_bytes(self) -> int:
        """Bytes of weights this stage holds: what model parallelism divides among the stages."""
        modules = [m for m in (self._encoder_layers, self._embeddings) if m is not None]
        return sum(p.numel() * p.element_size() for m in modules for p in m.parameters())

    def _warm_up_input(self) -> Tensors:
        if self.first:
            return {"text": np.array([b"Warm-up: the first run allocates buffers."], dtype=object)}
        return {
            "hidden": np.zeros((1, 8, minilm.DIMENSION), dtype=np.float32),
            "attention_mask": np.ones((1, 8), dtype=np.int64),
            "owner": np.zeros(1, dtype=np.int64),
            "weight": np.full(1, 6.0, dtype=np.float32),
            "texts": np.ones(1, dtype=np.int64),
        }

    def run(self, tensors: Tensors, parameters: dict[str, Any]) -> Tensors:
        import torch

        with torch.inference_mode():
            if self.first:
                tensors, hidden = self._embed(tensors, parameters)
            else:
                hidden = torch.from_numpy(np.array(tensors["hidden"]))  # writable copy
            mask = torch.from_numpy(np.array(tensors["attention_mask"]))
            hidden = self._encode(hidden, mask)
            if not self.last:
                return {**tensors, "hidden": hidden.numpy()}
            vectors = minilm.mean_pooled(hidden, mask).numpy()
        texts = int(tensors["texts"][0])
        pooled = chunking.pool(vectors, tensors["owner"], tensors["weight"], texts)
        return {"embedding": np.ascontiguousarray(pooled, dtype=np.float32)}

    def _embed(self, tensors: Tensors, parameters: dict[str, Any]) -> tuple[Tensors, Any]:
        """Texts -> windows -> token embeddings, with the bookkeeping the last stage pools by."""
        import torch

        assert self._splitter is not None, "load() first"
        texts = minilm.decode_texts(tensors["text"])
        truncate = minilm.truncate_parameter(parameters)
        windows = minilm.text_windows(self._splitter, texts, truncate)
        feeds = windows.feeds()
        hidden = self._embeddings(
            input_ids=torch.from_numpy(feeds["input_ids"]),
            token_type_ids=torch.from_numpy(feeds["token_type_ids"]),
        )
        carried = {
            "attention_mask": feeds["attention_mask"],
            "owner": windows.owner,
            "weight": windows.weight,
            "texts": np.array([windows.texts], dtype=np.int64),
        }
        return carried, hidden

    def _encode(self, hidden: Any, mask: Any) -> Any:
        """This stage's encoder layers, with the padding mask in the form the attention wants."""
        from transformers.masking_utils import create_bidirectional_mask

        attention = create_bidirectional_mask(
            config=self._config, inputs_embeds=hidden, attention_mask=mask
        )
        for layer in self._encoder_layers:
            hidden = layer(hidden, attention)
        return hidden
