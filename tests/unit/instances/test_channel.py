"""The gateway's end of a worker socket against a hand-driven peer: what a broken reply does."""

from __future__ import annotations

import asyncio
import itertools

import numpy as np
import pytest
import zmq
import zmq.asyncio

from dlproxy import protocol
from dlproxy.errors import InstanceFailed
from dlproxy.instances.channel import WorkerChannel

_endpoints = itertools.count(1)


async def test_an_undecodable_reply_fails_what_the_worker_holds_and_the_reader_goes_on() -> None:
    context = zmq.asyncio.Context()
    channel = WorkerChannel(context, f"inproc://channel-{next(_endpoints)}")
    worker = context.socket(zmq.DEALER)
    worker.connect(channel.endpoint)
    channel.start()
    try:
        x = {"x": np.array([1.0], np.float32)}
        first = channel.send_batch(x, {})
        await worker.recv()
        await worker.send(b"\xc1 not a message")  # garbage: no batch id can be read from it
        with pytest.raises(InstanceFailed, match="undecodable reply"):
            await asyncio.wait_for(first, 2)
        second = channel.send_batch(x, {})  # the channel still reads what comes next
        sent = protocol.decode_to_worker(await worker.recv())
        assert isinstance(sent, protocol.Batch)
        wire = {"y": protocol.to_wire(np.array([2.0], np.float32))}
        await worker.send(protocol.encode(protocol.Result(sent.id, wire, protocol.Load())))
        reply = await asyncio.wait_for(second, 2)
        assert isinstance(reply, protocol.Result)
    finally:
        await channel.close()
        worker.close(linger=0)
        context.term()
