"""The batching rule, driven by a hand-held worker: each sent batch is a future the test resolves."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import numpy as np
import pytest

from dlproxy import protocol
from dlproxy.batching.batcher import Batcher, units_of
from dlproxy.batching.fairness import FairShares
from dlproxy.batching.policy import FixedBatching
from dlproxy.errors import BadRequest, DeadlineExceeded, ModelError, Overloaded, RateLimited
from dlproxy.types import InferenceRequest, ModelSpec, TensorSpec


class HandWorker:
    """Records the batches the batcher sends; the test answers them when it chooses."""

    def __init__(self) -> None:
        self.sent: list[tuple[dict[str, np.ndarray], dict[str, Any], asyncio.Future[Any]]] = []

    def __call__(
        self, inputs: dict[str, np.ndarray], parameters: dict[str, Any]
    ) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.sent.append((inputs, parameters, future))
        return future

    def sizes(self) -> list[int]:
        return [len(inputs["x"]) for inputs, _, _ in self.sent]

    def answer(self, index: int, compute: float = 0.0) -> None:
        """Answer batch ``index``, as a worker that says it computed for ``compute`` s."""
        inputs, _, future = self.sent[index]
        wire = {"y": protocol.to_wire(inputs["x"] * 10)}
        future.set_result(protocol.Result(index, wire, protocol.Load(service_time=compute)))


def request(*values: int, deadline: float | None = None) -> InferenceRequest:
    return InferenceRequest("m", {"x": np.array(values, dtype=np.int64)}, deadline=deadline)


def batcher(
    worker: HandWorker,
    max_batch: int = 32,
    depth: int = 1,
    max_queue: int = 100,
    max_delay: float = 0.002,
) -> Batcher:
    return Batcher(worker, max_queue, FixedBatching(max_batch, max_delay), depth)


async def test_a_lone_request_on_an_idle_instance_is_sent_at_once() -> None:
    worker = HandWorker()
    b = batcher(worker)
    future = b.submit(request(1), {})
    assert worker.sizes() == [1]
    worker.answer(0)
    assert (await future)["y"].tolist() == [10]


async def test_requests_arriving_while_busy_go_out_together_when_it_frees() -> None:
    worker = HandWorker()
    b = batcher(worker, depth=1)
    first = b.submit(request(1), {})
    rest = [b.submit(request(v), {}) for v in (2, 3, 4, 5)]
    assert worker.sizes() == [1]
    worker.answer(0)
    await first
    assert worker.sizes() == [1, 4]
    worker.answer(1)
    results = [(await f)["y"].tolist() for f in rest]
    assert results == [[20], [30], [40], [50]]


async def test_batches_never_exceed_max_batch_and_keep_fifo_order() -> None:
    worker = HandWorker()
    b = batcher(worker, max_batch=4, depth=1)
    futures = [b.submit(request(v, v + 100), {}) for v in range(5)]
    assert worker.sizes() == [2]
    for index in range(3):
        worker.answer(index)
        await asyncio.sleep(0)
    assert worker.sizes() == [2, 4, 4]
    assert [(await f)["y"].tolist() for f in futures] == [
        [v * 10, (v + 100) * 10] for v in range(5)
    ]


async def test_a_full_queue_refuses_at_once() -> None:
    worker = HandWorker()
    b = batcher(worker, depth=1, max_queue=3)
    b.submit(request(1), {})
    b.submit(request(2, 3), {})
    b.submit(request(4), {})
    with pytest.raises(Overloaded):
        b.submit(request(5), {})


async def test_a_partial_batch_behind_a_busy_instance_waits_at_most_max_delay() -> None:
    worker = HandWorker()
    b = batcher(worker, depth=2, max_batch=8, max_delay=0.01)
    b.submit(request(1), {})
    b.submit(request(2), {})
    assert worker.sizes() == [1]  # the second waits: one batch is in flight and it is not full
    await asyncio.sleep(0.05)
    assert worker.sizes() == [1, 1]


async def test_a_serial_instance_gets_its_next_batch_just_before_it_is_expected_free() -> None:
    """A worker that computes one batch at a time: a partial batch sent while it computes only
    waits there, so it waits in the queue instead, where later requests can join it, until
    just before the batch computing should end (by the worker's measured cost per item)."""
    worker = HandWorker()
    b = Batcher(worker, 100, FixedBatching(32, 0.002), depth=2, serial=True)
    first = b.submit(request(1), {})
    worker.answer(0, compute=0.3)  # 0.3 s per item, as the worker measured it
    await first
    b.submit(request(2), {})  # idle: sent at once, expected to end 0.3 s from now
    b.submit(request(3), {})
    await asyncio.sleep(0.05)
    assert worker.sizes() == [1, 1]  # not sent after max_delay (2 ms): it would only wait there
    b.submit(request(4), {})
    b.submit(request(5), {})
    await asyncio.sleep(0.5)
    assert worker.sizes() == [1, 1, 3]  # sent before the worker freed, with those that came
    early = Batcher(worker, 100, FixedBatching(32, 0.002), depth=2, serial=True)
    first = early.submit(request(1), {})
    worker.answer(3, compute=10.0)
    await first
    early.submit(request(2), {})
    early.submit(request(3), {})
    worker.answer(4)  # the estimate said 10 s: the reply came first, and the next goes at once
    await asyncio.sleep(0)
    assert worker.sizes()[5:] == [1]


async def test_a_full_batch_behind_a_busy_instance_goes_without_waiting() -> None:
    worker = HandWorker()
    b = batcher(worker, depth=2, max_batch=2, max_delay=10.0)
    b.submit(request(1), {})
    b.submit(request(2), {})
    b.submit(request(3), {})
    assert worker.sizes() == [1, 2]


async def test_a_model_failure_fails_every_request_of_the_batch_once() -> None:
    worker = HandWorker()
    b = batcher(worker)
    future = b.submit(request(1), {})
    worker.sent[0][2].set_result(protocol.Failure(0, "bad value", True, protocol.Load()))
    with pytest.raises(BadRequest, match="bad value"):
        await future


async def test_expired_requests_are_dropped_before_they_reach_the_model() -> None:
    worker = HandWorker()
    b = batcher(worker, depth=1)
    b.submit(request(1), {})
    loop = asyncio.get_running_loop()
    expired = b.submit(request(2, deadline=loop.time() - 1), {})
    alive = b.submit(request(3), {})
    worker.answer(0)
    await asyncio.sleep(0)
    with pytest.raises(DeadlineExceeded):
        await expired
    assert worker.sizes() == [1, 1]
    worker.answer(1)
    assert (await alive)["y"].tolist() == [30]


async def test_requests_with_different_parameters_are_not_batched_together() -> None:
    worker = HandWorker()
    b = batcher(worker, depth=1)
    b.submit(request(1), {})
    b.submit(request(2), {"delay_ms": 5})
    b.submit(request(3), {})
    worker.answer(0)
    await asyncio.sleep(0)
    assert worker.sizes() == [1, 1]
    assert worker.sent[1][1] == {"delay_ms": 5}


async def test_admission_refuses_when_the_estimated_wait_is_too_long() -> None:
    worker = HandWorker()
    b = Batcher(worker, 1000, FixedBatching(4, 0.002), 1)
    first = b.submit(request(1), {})
    await asyncio.sleep(0.01)
    worker.answer(0)
    await first
    per_item = b.statistics().inference.sum  # one batch of one item so far
    b.max_queue_wait = 2.5 * per_item
    b.submit(request(2), {})  # sent at once: the instance is idle
    b.submit(request(3), {})  # queued: 1 x per_item
    b.submit(request(4), {})  # 2 x per_item
    with pytest.raises(Overloaded, match="estimated queue wait"):
        b.submit(request(5), {})  # 3 x per_item > 2.5 x


def texts(*sizes: int) -> InferenceRequest:
    """A request of text items of the given byte lengths."""
    data = np.array([b"x" * n for n in sizes], dtype=object)
    return InferenceRequest("m", {"x": data})


def test_units_count_items_unless_the_model_counts_text_by_size() -> None:
    assert units_of(texts(10, 5000, 1), unit_bytes=0) == 3
    # 10 B and 1 B are one unit each; 5,000 B at 1,024 per unit is 5 (rounded up).
    assert units_of(texts(10, 5000, 1), unit_bytes=1024) == 7
    assert units_of(request(1, 2, 3), unit_bytes=1024) == 3  # not text: items


async def test_long_texts_fill_a_batch_by_their_size_not_their_count() -> None:
    worker = HandWorker()
    b = Batcher(worker, 1000, FixedBatching(8, 0.002), 1, unit_bytes=100)
    first = b.submit(texts(10), {})
    # Queued behind the first: three texts of 4 units each, then two short ones.
    rest = [b.submit(texts(n), {}) for n in (400, 400, 400, 10, 10)]
    assert b.statistics().queued_items == 4 + 4 + 4 + 1 + 1
    _, _, future = worker.sent[0]
    future.set_result(protocol.Result(0, {"y": protocol.to_wire(np.zeros(1))}, protocol.Load()))
    await first
    # 8 units per batch: two long texts (4 + 4), not all five requests (14 units).
    assert [len(inputs["x"]) for inputs, _, _ in worker.sent] == [1, 2]
    assert b.inflight_units == 8
    for f in rest:
        f.cancel()


# --- #16 item 1: only compatible requests share a batch; a batch that fails to build fails all


def shaped(*rows: list[int], name: str = "x") -> InferenceRequest:
    return InferenceRequest("m", {name: np.array(rows, dtype=np.int64)})


async def test_requests_of_other_shapes_or_inputs_are_batched_apart_and_each_answered() -> None:
    worker = HandWorker()
    b = batcher(worker, depth=1)
    first = b.submit(request(1), {})  # sent at once: the instance was idle
    wide = b.submit(shaped([1, 2, 3]), {})  # [1, 3]: another non-batch shape than [1]
    narrow = b.submit(request(4, 5), {})  # [2]: compatible with the first, not with wide
    other = b.submit(shaped([7], name="z"), {})  # another input name
    assert len(worker.sent) == 1
    for index in range(4):  # answer every batch as it is sent
        for _ in range(100):  # the previous answer lets the batcher send the next batch
            if len(worker.sent) > index:
                break
            await asyncio.sleep(0)
        inputs, _, future = worker.sent[index]
        (name,) = inputs
        future.set_result(
            protocol.Result(index, {"y": protocol.to_wire(inputs[name] * 10)}, protocol.Load())
        )
        await asyncio.sleep(0)
    assert (await first)["y"].tolist() == [10]
    assert (await wide)["y"].tolist() == [[10, 20, 30]]
    assert (await narrow)["y"].tolist() == [40, 50]
    assert (await other)["y"].tolist() == [[70]]
    assert [sorted(inputs) for inputs, _, _ in worker.sent] == [["x"], ["x"], ["x"], ["z"]]


async def test_a_batch_that_cannot_be_built_fails_every_request_it_took() -> None:
    def broken(inputs: dict[str, np.ndarray], parameters: dict[str, Any]) -> asyncio.Future[Any]:
        raise ValueError("the channel could not encode this batch")

    b = Batcher(broken, 100, FixedBatching(32, 0.002), 1)
    futures = [b.submit(request(i), {}) for i in range(3)]
    for future in futures:
        with pytest.raises(Exception, match="could not encode"):
            await asyncio.wait_for(future, 1)
    assert b.statistics().inflight_requests == 0 and b.queued == 0


async def test_a_reply_with_the_wrong_row_count_fails_the_batch_not_misaligns_it() -> None:
    worker = HandWorker()
    b = batcher(worker, depth=1)
    head = b.submit(request(1), {})  # sent at once; the next three queue behind it
    three = [b.submit(request(i), {}) for i in (2, 3, 4)]
    worker.answer(0)
    await head
    inputs, _, future = worker.sent[1]
    assert len(inputs["x"]) == 3
    one_row = {"y": protocol.to_wire(np.array([1], np.int64))}
    future.set_result(protocol.Result(1, one_row, protocol.Load()))  # 1 row for 3 items
    for pending in three:
        with pytest.raises(ModelError, match=r"1 row\(s\) .* for a batch of 3 item"):
            await asyncio.wait_for(pending, 1)
    scalar = b.submit(request(5), {})  # a 0-d output: no rows at all
    worker.sent[2][2].set_result(
        protocol.Result(2, {"y": protocol.to_wire(np.array(7, np.int64))}, protocol.Load())
    )
    with pytest.raises(ModelError, match="0 row"):
        await asyncio.wait_for(scalar, 1)


def _spec(datatype: str = "INT64", shape: tuple[int, ...] = (-1,)) -> ModelSpec:
    return ModelSpec(
        "m", "1", "test", (TensorSpec("x", "INT64", (-1,)),), (TensorSpec("y", datatype, shape),), 0
    )


@pytest.mark.parametrize(
    ("reply", "complaint"),
    [
        (np.array([1.5, 2.5], np.float32), "model 'm' .* output 'y' is FP32, declared INT64"),
        (np.array([[1], [2]], np.int64), r"output 'y' has shape \[2, 1\], declared \[-1\]"),
    ],
)
async def test_a_reply_of_another_dtype_or_shape_than_the_spec_fails_its_requests(
    reply: np.ndarray, complaint: str
) -> None:
    worker = HandWorker()
    b = batcher(worker, depth=1)
    b.adopt(_spec())
    head = b.submit(request(1, 2), {})
    worker.sent[0][2].set_result(
        protocol.Result(0, {"y": protocol.to_wire(reply)}, protocol.Load())
    )
    with pytest.raises(ModelError, match=complaint):
        await asyncio.wait_for(head, 1)
    good = b.submit(request(3), {})  # the next batch is served: nothing is stuck
    worker.answer(1)
    assert (await good)["y"].tolist() == [30]


async def test_fixed_output_dimensions_are_checked_and_free_ones_are_not() -> None:
    worker = HandWorker()
    b = batcher(worker, depth=1)
    b.adopt(_spec("INT64", (-1, 2, -1)))
    fits = b.submit(request(1), {})
    worker.sent[0][2].set_result(
        protocol.Result(0, {"y": protocol.to_wire(np.zeros((1, 2, 5), np.int64))}, protocol.Load())
    )
    assert (await fits)["y"].shape == (1, 2, 5)
    wrong = b.submit(request(1), {})
    worker.sent[1][2].set_result(
        protocol.Result(1, {"y": protocol.to_wire(np.zeros((1, 3, 5), np.int64))}, protocol.Load())
    )
    with pytest.raises(ModelError, match=r"declared \[-1, 2, -1\]"):
        await asyncio.wait_for(wrong, 1)


async def test_the_hang_limit_grows_with_the_work_held_by_its_measured_cost_only() -> None:
    worker = HandWorker()
    b = batcher(worker, max_batch=4, depth=1)
    assert b.hold_limit(30.0) == 30.0  # nothing measured, nothing held
    first = b.submit(request(1, 2, 3, 4), {})
    worker.answer(0)
    await first
    per_unit = b.statistics().inference.sum / 4
    b.submit(request(*range(400)), {})  # one request of 100 full batches
    assert b.hold_limit(30.0) == pytest.approx(30.0 + 4 * 400 * per_unit)
    assert b.hold_limit(30.0) < 31.0  # not 100 x 30 s


async def test_the_models_own_batch_bound_is_never_exceeded() -> None:
    worker = HandWorker()
    b = batcher(worker, max_batch=32, depth=1)
    b.adopt(dataclasses.replace(_spec(), max_batch_size=1))  # an ONNX graph exported at batch 1
    futures = [b.submit(request(i), {}) for i in range(4)]
    for index in range(4):
        worker.answer(index)
        await asyncio.sleep(0)
    await asyncio.gather(*futures)
    assert worker.sizes() == [1, 1, 1, 1]


def prioritized(value: int, priority: int) -> InferenceRequest:
    r = request(value)
    r.priority = priority
    return r


async def test_higher_priorities_are_served_first_and_waiting_raises_a_low_one() -> None:
    worker = HandWorker()
    b = batcher(worker, max_batch=2, depth=1)
    b.submit(request(0), {})  # sent at once; the rest queue
    for value in (1, 2, 3):
        b.submit(prioritized(value, 0), {})
    b.submit(prioritized(9, 5), {})  # sent at once too: the one batch past depth
    b.submit(prioritized(8, 5), {})
    worker.answer(0)
    await asyncio.sleep(0)
    assert [inputs["x"].tolist() for inputs, _, _ in worker.sent] == [[0], [9], [8]]
    b.aging = 0.01  # now one level per 10 ms waited
    await asyncio.sleep(0.06)  # the old ones have earned 5+ levels
    b.submit(prioritized(7, 5), {})
    worker.answer(1)
    await asyncio.sleep(0)
    assert worker.sent[3][0]["x"].tolist() == [1, 2]  # aged past the fresh priority-5 one


async def test_a_prioritized_request_goes_at_once_in_a_batch_of_its_own_level() -> None:
    worker = HandWorker()
    b = batcher(worker, max_batch=8, depth=1)
    b.submit(request(0), {})  # the batch being computed
    for value in (1, 2, 3):
        b.submit(request(value), {})  # wait: depth 1 is taken
    assert worker.sizes() == [1]
    b.submit(prioritized(9, 5), {})
    await asyncio.sleep(0.01)
    assert worker.sizes() == [1, 1] and worker.sent[1][0]["x"].tolist() == [9]  # alone, now
    worker.answer(0)
    worker.answer(1)
    await asyncio.sleep(0.01)
    assert worker.sent[2][0]["x"].tolist() == [1, 2, 3]


async def test_while_prioritized_requests_arrive_other_batches_stay_short() -> None:
    """``urgent_max_batch``: once a prioritized request arrived, default-priority batches hold
    at most that many items (a prioritized one then waits behind a short batch), until
    ``aging`` s pass without another; then they fill to ``max_batch`` again."""
    worker = HandWorker()
    b = Batcher(worker, 100, FixedBatching(8, 0.002), depth=1, aging=0.05, urgent_max_batch=2)
    b.submit(request(0), {})  # the batch being computed
    for value in range(1, 9):
        b.submit(request(value), {})
    b.submit(prioritized(9, 50), {})  # goes at once, past the depth
    await asyncio.sleep(0)
    worker.answer(0)
    worker.answer(1)
    await asyncio.sleep(0)
    assert worker.sizes()[2] == 2  # short: a prioritized request arrived just now
    await asyncio.sleep(0.06)  # none for longer than aging
    worker.answer(2)
    await asyncio.sleep(0)
    assert worker.sizes()[3] == 6  # the rest, in one batch again


def text_batches(worker: HandWorker) -> list[list[int]]:
    """The byte lengths of the texts in each batch sent."""
    return [[len(t) for t in inputs["x"]] for inputs, _, _ in worker.sent]


async def test_texts_are_batched_with_the_nearest_lengths_first() -> None:
    """A queue of short sentences and paragraphs, mixed: each batch after the first takes its
    oldest request and then the texts of the nearest lengths, not whatever came next, so short
    texts are not padded to a paragraph's length (a short head fills with short ones)."""
    worker = HandWorker()
    b = Batcher(worker, 100, FixedBatching(4, 0.002), depth=1)
    lengths = [60, 60, 900, 60, 1000, 60, 950, 60, 60]
    futures = [b.submit(texts(n), {}) for n in lengths]
    for index in range(3):
        worker.answer(index)
        await asyncio.sleep(0)
    assert text_batches(worker) == [[60], [60, 60, 60, 60], [900, 1000, 950, 60]]
    for future in futures:
        await future
    fifo = HandWorker()
    b = Batcher(fifo, 100, FixedBatching(4, 0.002), depth=1, by_length=False)
    for n in lengths:
        b.submit(texts(n), {})
    fifo.answer(0)
    await asyncio.sleep(0)
    assert text_batches(fifo)[1] == [60, 900, 60, 1000]  # in order: three padded to 1,000 B


async def test_a_batch_is_bounded_by_its_padded_tokens_as_well_as_its_items() -> None:
    """``max_batch_tokens``: items x the longest one's estimated tokens (4 bytes a token, plus
    2): a 398-byte text is 102 tokens, a 38-byte one 12. A text that does not fit waits for a
    later batch; one of its own length or shorter may still join."""
    worker = HandWorker()
    b = Batcher(worker, 100, FixedBatching(32, 0.002), depth=1, max_batch_tokens=250)
    b.submit(texts(38), {})  # sent at once
    futures = [b.submit(texts(n), {}) for n in (398, 38, 38, 398, 398, 38)]
    for index in range(4):
        worker.answer(index)
        await asyncio.sleep(0)
    # 2 x 102 = 204 tokens (a third long text: 306); then the short ones, 3 x 12 = 36 (with the
    # long one left: 4 x 102 = 408); then it, alone.
    assert text_batches(worker)[1:] == [[398, 398], [38, 38, 38], [398]]
    for future in futures:
        await future


def from_client(client: str, value: int) -> InferenceRequest:
    r = request(value)
    r.client = client
    return r


def clients_of(batch: tuple[dict[str, np.ndarray], Any, Any]) -> list[str]:
    """Values below 100 came from the flood, the others from the light client (see callers)."""
    return ["flood" if v < 100 else "light" for v in batch[0]["x"].tolist()]


async def test_a_flooding_client_does_not_delay_a_light_one_beyond_the_next_batch() -> None:
    """Virtual time: the light client's requests start at the queue's virtual time, the flood's
    after its own backlog, so the next batch takes the light ones first; in arrival order
    (``fair=False``) they would wait behind twelve of the flood's."""
    for fair, expected in ((True, ["flood", "flood", "light", "light"]), (False, ["flood"] * 4)):
        worker = HandWorker()
        b = Batcher(worker, 100, FixedBatching(4, 0.002), depth=1, fair=fair)
        b.submit(from_client("flood", 0), {})  # sent at once
        futures = [b.submit(from_client("flood", v), {}) for v in range(1, 13)]
        futures += [b.submit(from_client("light", 100 + v), {}) for v in range(2)]
        worker.answer(0)
        await asyncio.sleep(0)
        assert sorted(clients_of(worker.sent[1])) == expected
        for index in range(2, 5):
            worker.answer(index - 1)
            await asyncio.sleep(0)
        worker.answer(4)
        for future in futures:
            await future


async def test_backlogged_clients_share_batches_by_weight() -> None:
    """Weights 3 and 1, both backlogged: three of every four items are the heavy client's."""
    worker = HandWorker()
    weights = {"flood": 3.0, "light": 1.0}
    b = Batcher(worker, 100, FixedBatching(4, 0.002), depth=1, client_weights=weights)
    b.submit(from_client("flood", 0), {})
    futures = [b.submit(from_client("flood", v), {}) for v in range(1, 13)]
    futures += [b.submit(from_client("light", 100 + v), {}) for v in range(12)]
    worker.answer(0)
    for index in (1, 2):
        await asyncio.sleep(0)
        assert sorted(clients_of(worker.sent[index])) == ["flood", "flood", "flood", "light"]
        worker.answer(index)
    while len(worker.sent) < 7:
        await asyncio.sleep(0)
        worker.answer(len(worker.sent) - 1)
    for future in futures:
        await future


async def test_a_full_queue_refuses_the_client_most_over_its_share_not_the_newcomer() -> None:
    """The flood fills the queue; a light client's request takes the place of the flood's newest
    (refused with 429, saying why); the flood's next one is refused as the queue is full. In
    arrival order the light client would be the one refused."""
    worker = HandWorker()
    b = Batcher(worker, 6, FixedBatching(4, 0.002), depth=1)
    b.submit(from_client("flood", 0), {})
    flood = [b.submit(from_client("flood", v), {}) for v in range(1, 7)]
    light = b.submit(from_client("light", 100), {})
    assert isinstance(flood[-1].exception(), RateLimited)
    assert "more than its fair share" in str(flood[-1].exception())
    with pytest.raises(Overloaded, match="queue is full"):
        b.submit(from_client("flood", 7), {})
    worker.answer(0)
    await asyncio.sleep(0)
    assert clients_of(worker.sent[1])[0] == "light"
    for index in range(1, 3):
        worker.answer(index)
        await asyncio.sleep(0)
    assert (await light)["y"].tolist() == [1000]
    unfair = Batcher(HandWorker(), 6, FixedBatching(4, 0.002), depth=1, fair=False)
    for v in range(7):
        unfair.submit(from_client("flood", v), {})
    with pytest.raises(Overloaded, match="queue is full"):
        unfair.submit(from_client("light", 100), {})


def test_the_wait_estimate_counts_what_fair_order_puts_ahead() -> None:
    """``max_queue_wait`` weighs a request's place in tag order: a light client behind a
    backlog of 300 waits for its own item and one of the flood's, not for 300."""
    shares = FairShares()
    for _ in range(300):
        shares.tag("flood", 1)
    assert shares.ahead("light", 1) == 2
    assert shares.ahead("flood", 1) == 301
    shares = FairShares({"light": 4.0})
    for _ in range(300):
        shares.tag("flood", 1)
    assert shares.ahead("light", 4) == 5  # four items at weight 4: one of the flood's per 4


async def test_a_light_client_behind_a_heavy_one_keeps_the_heavy_ones_batches_short() -> None:
    """With fair shares, a request of a client with nothing queued, while another holds a
    batch's worth, is urgent as a prioritized one is: the next batches stay short."""
    worker = HandWorker()
    b = Batcher(worker, 100, FixedBatching(4, 0.002), depth=1, urgent_max_batch=2)
    b.submit(from_client("flood", 0), {})
    for v in range(1, 9):
        b.submit(from_client("flood", v), {})
    b.submit(from_client("light", 100), {})
    worker.answer(0)
    await asyncio.sleep(0)
    assert clients_of(worker.sent[1]) == ["light", "flood"]  # short, the light one first
    worker.answer(1)
    await asyncio.sleep(0)
    assert len(worker.sent[2][0]["x"]) == 2
