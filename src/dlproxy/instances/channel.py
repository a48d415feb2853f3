"""The gateway's end of one worker's socket: send a batch, get a future for its reply.

Futures are registered before the message is sent, so a reply can never arrive unclaimed. When the
worker dies, ``fail_all`` fails exactly the futures it held and nothing else.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any, cast

import msgspec
import numpy as np
import zmq
import zmq.asyncio

from dlproxy import protocol
from dlproxy.errors import InstanceFailed

log = logging.getLogger("dlproxy.instances")


class WorkerChannel:
    """A DEALER socket bound by the gateway; the worker connects to ``endpoint``."""

    def __init__(self, context: zmq.asyncio.Context, endpoint: str) -> None:
        self.endpoint = endpoint
        self._socket = context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.bind(endpoint)
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[protocol.Result | protocol.Failure]] = {}
        self._reader: asyncio.Task[None] | None = None
        self.ready: asyncio.Future[protocol.Ready] = asyncio.get_running_loop().create_future()
        self.last_heard = time.monotonic()
        self._sent_at: dict[int, float] = {}
        self.load = protocol.Load()
        self.on_load: Callable[[protocol.Load], None] = lambda load: None

    def start(self) -> None:
        self._reader = asyncio.create_task(self._read(), name=f"read {self.endpoint}")

    def send_batch(
        self, inputs: dict[str, np.ndarray], parameters: dict[str, Any], borrow: bool = False
    ) -> asyncio.Future[protocol.Result | protocol.Failure]:
        """Send one batch; the future resolves with its Result or fails with InstanceFailed."""
        batch_id = next(self._ids)
        future: asyncio.Future[protocol.Result | protocol.Failure] = (
            asyncio.get_running_loop().create_future()
        )
        self._pending[batch_id] = future
        self._sent_at[batch_id] = time.monotonic()
        wire = {name: protocol.to_wire(array) for name, array in inputs.items()}
        sent = self._socket.send(
            protocol.encode(protocol.Batch(batch_id, wire, parameters, borrow)),
            flags=zmq.NOBLOCK,
            copy=False,
        )
        # pyzmq's asyncio send returns a Future (typed only as Awaitable).
        cast("asyncio.Future[Any]", sent).add_done_callback(
            lambda done: self._check_sent(batch_id, done)
        )
        return future

    def _check_sent(self, batch_id: int, sent: asyncio.Future[Any]) -> None:
        """A batch the worker could not take (it is gone) fails at once, to be retried."""
        if sent.cancelled() or sent.exception() is None:
            return
        self._sent_at.pop(batch_id, None)
        future = self._pending.pop(batch_id, None)
        if future is not None and not future.done():
            future.set_exception(
                InstanceFailed(f"could not send to the worker: {sent.exception()}")
            )

    def send_stop(self) -> None:
        sent = self._socket.send(protocol.encode(protocol.Stop()), flags=zmq.NOBLOCK)
        cast("asyncio.Future[Any]", sent).add_done_callback(
            lambda done: done.cancelled() or done.exception()
        )

    def oldest_pending_age(self) -> float:
        """Seconds the oldest unanswered batch has been with the worker (0 when none)."""
        for sent in self._sent_at.values():  # insertion order: the first is the oldest
            return time.monotonic() - sent
        return 0.0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def fail_all(self, reason: str, held: bool = True) -> None:
        """Fail every batch the worker holds (it died or hung, ``held``; or it was stopped);
        they will be retried elsewhere."""
        pending, self._pending = self._pending, {}
        self._sent_at.clear()
        for future in pending.values():
            if not future.done():
                future.set_exception(InstanceFailed(reason, held=held))

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except asyncio.CancelledError:
                pass
        self.fail_all("the instance was stopped", held=False)
        self._socket.close(linger=0)

    async def _read(self) -> None:
        while True:
            frame = await self._socket.recv(copy=False)
            self.last_heard = time.monotonic()
            try:
                message = protocol.decode_from_worker(frame.buffer)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                # Whose reply it was cannot be read: fail every batch held (retried elsewhere),
                # and keep reading: one broken frame must not leave the others unanswered.
                log.error("worker at %s sent an undecodable reply: %s", self.endpoint, exc)
                self.fail_all("the worker sent an undecodable reply", held=True)
                continue
            match message:
                case protocol.Result(id=batch_id) | protocol.Failure(id=batch_id):
                    self.load = message.load
                    self.on_load(message.load)
                    self._sent_at.pop(batch_id, None)
                    future = self._pending.pop(batch_id, None)
                    if future is not None and not future.done():
                        future.set_result(message)
                case protocol.Heartbeat():
                    self.load = message.load
                case protocol.Ready():
                    self.load = message.load
                    if not self.ready.done():
                        self.ready.set_result(message)
                case protocol.LoadFailed():
                    if not self.ready.done():
                        self.ready.set_exception(RuntimeError(message.message))
