"""A user's ONNX file, served as it is: the spec is read from the graph's inputs and outputs.

The first dimension of every input and output is taken to be the batch axis (``-1`` in the spec),
whatever the file declares, because the batcher stacks requests along it. Other symbolic dims stay
``-1``. Inputs are cast to the declared element type, since JSON clients send FP64/INT64 freely.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dlproxy.errors import BadRequest
from dlproxy.models.base import Model, file_digest
from dlproxy.types import DTYPES, ModelSpec, TensorSpec

# ONNX Runtime's type strings -> KServe datatypes (string tensors are BYTES).
ORT_TYPES: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}
DEFAULT_MAX_BATCH_SIZE = 64


def cpu_session(
    path: Path,
    threads: int,
    *,
    memory_patterns: bool = True,
    disabled_optimizers: tuple[str, ...] = (),
    spinning: bool = True,
) -> Any:
    """One sequential ONNX Runtime session on the CPU whose intra-op pool is the instance's
    thread budget, every graph optimisation on (but ``disabled_optimizers``). Models whose every
    batch has a new shape turn ``memory_patterns`` off: patterns are planned and kept per shape.
    A session on borrowed cores turns ``spinning`` off: its threads sleep, not spin, between runs,
    so they take nothing from the workers whose cores they borrow."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_mem_pattern = memory_patterns
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(
        str(path),
        options,
        providers=["CPUExecutionProvider"],
        disabled_optimizers=list(disabled_optimizers),
    )


class OnnxFileModel(Model):
    """Runs ``path`` with ONNX Runtime on the CPU with ``threads`` intra-op threads."""

    def __init__(
        self, path: Path | str, threads: int = 1, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    ) -> None:
        self.path = Path(path)
        self.threads = max(1, int(threads))
        self.max_batch_size = max_batch_size
        self._session: Any = None
        self._input_dtypes: dict[str, np.dtype[Any]] = {}

    def load(self) -> None:
        """Open the session and derive the spec from it."""
        if not self.path.is_file():
            raise FileNotFoundError(f"No ONNX file at {self.path}.")
        self._session = cpu_session(self.path, self.threads)
        inputs = tuple(_tensor_spec(arg) for arg in self._session.get_inputs())
        outputs = tuple(_tensor_spec(arg) for arg in self._session.get_outputs())
        self._input_dtypes = {t.name: DTYPES[t.datatype] for t in inputs}
        # A graph exported with a fixed batch (often 1) can take no more than that per call.
        fixed = [a.shape[0] for a in self._session.get_inputs() if a.shape and _is_dim(a.shape[0])]
        self.spec = ModelSpec(
            name=self.path.stem,
            version="1",
            platform="onnxruntime",
            inputs=inputs,
            outputs=outputs,
            max_batch_size=min([self.max_batch_size, *fixed]),
            recipe=f"onnx/{file_digest(self.path)}",
            parameters=(),  # a graph reads its inputs only
        )

    def predict(
        self, inputs: dict[str, np.ndarray], parameters: dict[str, Any]
    ) -> dict[str, np.ndarray]:
        """Cast each input to its declared type and run; every output comes back by name."""
        feeds: dict[str, np.ndarray] = {}
        for name, dtype in self._input_dtypes.items():
            if name not in inputs:
                raise BadRequest(f"Missing input '{name}'.")
            feeds[name] = _cast(name, inputs[name], dtype)
        names = [t.name for t in self.spec.outputs]
        return dict(zip(names, self._session.run(names, feeds), strict=True))


def _tensor_spec(arg: Any) -> TensorSpec:
    """One ONNX Runtime NodeArg -> a TensorSpec whose first dim is the batch axis."""
    datatype = ORT_TYPES.get(arg.type)
    if datatype is None:
        raise ValueError(f"ONNX value '{arg.name}' has type {arg.type}, which cannot be served.")
    dims = [d if _is_dim(d) else -1 for d in (arg.shape or [])]
    shape = (-1, *dims[1:]) if dims else (-1,)
    return TensorSpec(arg.name, datatype, shape)


def _is_dim(value: Any) -> bool:
    """A fixed dimension: ONNX Runtime gives symbolic ones as str or None."""
    return isinstance(value, int) and value > 0


def _cast(name: str, array: np.ndarray, dtype: np.dtype[Any]) -> np.ndarray:
    """The array in the graph's type; strings become str objects, as ONNX Runtime wants them."""
    if dtype.kind == "O":
        return np.array(
            [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in array.ravel()],
            dtype=object,
        ).reshape(array.shape)
    if array.dtype == dtype:
        return array
    try:
        return array.astype(dtype, casting="unsafe")
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"Input '{name}' cannot be read as {dtype}: {exc}") from None
