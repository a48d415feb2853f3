"""The stage worker's bookkeeping: batches cut into micro-batches, gathered back in order, and one
reply per batch even when a micro-batch failed."""

from __future__ import annotations

import numpy as np

from dlproxy import protocol
from dlproxy.worker.stage import Gathering, Part, micro_batches


def part(index: int, count: int, rows: np.ndarray | None = None, error: str = "") -> Part:
    tensors = {} if rows is None else {"y": protocol.to_wire(rows)}
    return Part(7, index, count, tensors, {}, error, bool(error))


def test_micro_batches_cut_along_the_item_axis() -> None:
    inputs = {"x": np.arange(10), "t": np.array([f"{i}".encode() for i in range(10)], dtype=object)}
    parts = micro_batches(inputs, 3)
    assert [len(p["x"]) for p in parts] == [4, 4, 2]
    assert np.concatenate([p["x"] for p in parts]).tolist() == list(range(10))
    assert [len(p) for p in micro_batches({"x": np.arange(2)}, 3)] == [1, 1]


def test_gathering_reassembles_out_of_order_micro_batches() -> None:
    batch = Gathering(3)
    assert not batch.add(part(2, 3, np.array([[5.0]], dtype=np.float32)))
    assert not batch.add(part(0, 3, np.array([[1.0], [2.0]], dtype=np.float32)))
    assert batch.add(part(1, 3, np.array([[3.0], [4.0]], dtype=np.float32)))
    reply = batch.reply(7, protocol.Load())
    assert isinstance(reply, protocol.Result) and reply.id == 7
    assert protocol.from_wire(reply.outputs["y"]).ravel().tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_a_failed_micro_batch_fails_the_batch_once_all_parts_are_in() -> None:
    batch = Gathering(2)
    assert not batch.add(part(0, 2, error="ValueError: bad text"))
    assert batch.add(part(1, 2, np.array([[1.0]], dtype=np.float32)))
    reply = batch.reply(7, protocol.Load())
    assert isinstance(reply, protocol.Failure)
    assert (reply.message, reply.bad_input) == ("ValueError: bad text", True)
