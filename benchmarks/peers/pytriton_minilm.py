"""NVIDIA Triton (through PyTriton) serving the same minilm file as dlproxy, for the side-by-side
runs of ``benchmarks/contention.py``. Not part of dlproxy: it runs in its own environment.

    python3.11 -m venv /work/peers && /work/peers/bin/pip install nvidia-pytriton==0.7.0 \\
        onnxruntime numpy tokenizers
    LD_LIBRARY_PATH=$(python3.11 -c 'import sys; print(sys.base_prefix)')/lib \\
        /work/peers/bin/python benchmarks/peers/pytriton_minilm.py --port 18500 \\
        --model ~/.cache/dlproxy/models/minilm/int8-r3/model.onnx \\
        --tokenizer ~/.cache/dlproxy/models/minilm/tokenizer.json

(``LD_LIBRARY_PATH``: Triton's Python backend stub links ``libpython3.11.so``; it must be the one
of the interpreter whose standard library the environment uses, not an older system copy.)

The model runs as dlproxy runs it: the same ONNX file and tokenizer (truncation at 256 tokens,
padding to the batch's longest), the same session options (one intra-op thread per instance,
SkipLayerNormFusion off, no memory patterns), ``--instances`` instances, Triton's dynamic
batcher up to 32 items with ``--max-queue-delay-us`` of waiting. Requests carry the texts as a
[N, 1] BYTES tensor named ``text`` (``dlproxy bench --item-shape 1``).
"""

from __future__ import annotations

import argparse
import signal
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig
from tokenizers import Tokenizer


def session(path: Path, threads: int) -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_mem_pattern = False
    return ort.InferenceSession(
        str(path),
        options,
        providers=["CPUExecutionProvider"],
        disabled_optimizers=["SkipLayerNormFusion"],
    )


def instance(model: Path, tokenizer_file: Path, threads: int) -> Any:
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.enable_truncation(max_length=256)
    tokenizer.enable_padding(pad_id=0, pad_type_id=0, pad_token="[PAD]")
    run = session(model, threads)

    @batch
    def infer(text: np.ndarray) -> dict[str, np.ndarray]:
        texts = [t.decode("utf-8") for t in text.ravel()]
        encodings = tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        return {"embedding": run.run(["sentence_embedding"], feeds)[0].astype(np.float32)}

    return infer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=18500, help="HTTP; gRPC and metrics follow")
    parser.add_argument("--model", type=Path, required=True, help="minilm's ONNX file")
    parser.add_argument("--tokenizer", type=Path, required=True, help="its tokenizer.json")
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per instance")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-queue-delay-us", type=int, default=2000)
    args = parser.parse_args()
    config = TritonConfig(
        http_port=args.port, grpc_port=args.port + 1, metrics_port=args.port + 2, log_verbose=0
    )
    with Triton(config=config) as triton:
        triton.bind(
            model_name="minilm",
            infer_func=[
                instance(args.model, args.tokenizer, args.threads) for _ in range(args.instances)
            ],
            inputs=[Tensor(name="text", dtype=bytes, shape=(1,))],
            outputs=[Tensor(name="embedding", dtype=np.float32, shape=(384,))],
            config=ModelConfig(
                max_batch_size=args.max_batch,
                batcher=DynamicBatcher(max_queue_delay_microseconds=args.max_queue_delay_us),
            ),
            strict=False,
        )
        signal.signal(signal.SIGTERM, lambda *_: triton.stop())
        triton.serve()


if __name__ == "__main__":
    main()
