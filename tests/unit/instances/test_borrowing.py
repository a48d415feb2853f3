"""A batch may borrow the idle cores only while no local worker of the gateway holds one: the
flag each batch carries to its worker, seen by hand-driven worker sockets."""

from __future__ import annotations

import asyncio
import itertools

import numpy as np
import pytest
import zmq
import zmq.asyncio

from dlproxy import protocol
from dlproxy.batching.policy import FixedBatching
from dlproxy.instances.base import InstanceOptions
from dlproxy.instances.channel import WorkerChannel
from dlproxy.instances.local import LocalInstance

_endpoints = itertools.count(1)
X = {"x": np.array([1.0], np.float32)}


class Peer:
    """A worker's socket, driven by the test."""

    def __init__(self, context: zmq.asyncio.Context, instance: LocalInstance) -> None:
        channel = WorkerChannel(context, f"inproc://borrow-{next(_endpoints)}")
        self.socket = context.socket(zmq.DEALER)
        self.socket.connect(channel.endpoint)
        channel.start()
        instance._channel = channel
        self.channel = channel

    async def take(self) -> protocol.Batch:
        message = protocol.decode_to_worker(await self.socket.recv())
        assert isinstance(message, protocol.Batch)
        return message

    async def answer(self, batch: protocol.Batch) -> None:
        wire = {"y": protocol.to_wire(np.array([2.0], np.float32))}
        await self.socket.send(protocol.encode(protocol.Result(batch.id, wire, protocol.Load())))


def instance(context: zmq.asyncio.Context, borrow_threads: int) -> LocalInstance:
    options = InstanceOptions(100, FixedBatching, borrow_threads=borrow_threads)
    return LocalInstance(context, "echo", options, threads=1)


async def test_a_batch_borrows_the_cores_only_when_no_worker_holds_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(LocalInstance, "held_here", 0)
    context = zmq.asyncio.Context()
    a, b = instance(context, 2), instance(context, 2)
    peer_a, peer_b = Peer(context, a), Peer(context, b)
    try:
        first = a._send(X, {})
        lone = await peer_a.take()
        assert lone.borrow  # nothing else held: the other core is idle
        second = b._send(X, {})
        beside = await peer_b.take()
        assert not beside.borrow  # a holds one: b keeps to its own thread
        await peer_a.answer(lone)
        await asyncio.wait_for(first, 2)
        third = a._send(X, {})
        assert not (await peer_a.take()).borrow  # b still holds one
        await peer_b.answer(beside)
        await asyncio.wait_for(second, 2)
        third.cancel()  # a reply that never comes is released too
        await asyncio.sleep(0)
        assert LocalInstance.held_here == 0
        fourth = b._send(X, {})
        assert (await peer_b.take()).borrow
        fourth.cancel()
    finally:
        for peer in (peer_a, peer_b):
            peer.socket.close(0)
            await peer.channel.close()
        context.term()


async def test_without_more_threads_than_its_own_an_instance_never_borrows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(LocalInstance, "held_here", 0)
    context = zmq.asyncio.Context()
    alone = instance(context, 1)  # --borrow-threads 1 with 1 thread each: nothing to borrow
    peer = Peer(context, alone)
    try:
        reply = alone._send(X, {})
        assert not (await peer.take()).borrow
        reply.cancel()
    finally:
        peer.socket.close(0)
        await peer.channel.close()
        context.term()
