"""Stage process entry of a pipelined instance: K of these form a ring of zmq PUSH/PULL sockets.

    gateway --Batch--> stage 0 --> stage 1 --> ... --> stage K-1 --Result--> stage 0 --> gateway

Stage 0 is the only one the gateway talks to (the same DEALER socket and messages as a plain
worker, so the gateway sees one instance). It cuts each batch into micro-batches and pushes each
downstream as soon as it has run its layers on it: while stage 1 computes micro-batch j, stage 0
computes j+1 (pipelining). The last stage gathers a batch's micro-batches, and sends the batch's
``Result`` (or one ``Failure``) back around the ring to stage 0, which adds its load figures and
passes it on. Start-up: stage 0 sends the gateway ``Ready`` only once a ``Hello`` it sent has come
back around the ring, i.e. once every stage is loaded and connected. ``Stop`` travels down the
chain; each stage forwards it and exits. A stage never sees the gateway die: it dies with it.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
import zmq

from dlproxy import protocol
from dlproxy.models.stages import ModelStage, Tensors, create_stage
from dlproxy.worker.main import LoadMeter, die_with_parent


class Part(msgspec.Struct, tag=True, array_like=True):
    """stage -> next stage: micro-batch ``index`` of ``count`` of batch ``id`` (or its error)."""

    id: int
    index: int
    count: int
    tensors: dict[str, protocol.WireTensor]
    parameters: dict[str, Any] = {}
    error: str = ""
    bad_input: bool = False


class Hello(msgspec.Struct, tag=True, array_like=True):
    """Goes once around the ring at start-up: every stage is loaded and connected."""


ToStage = Part | Hello | protocol.Stop
Returned = protocol.Result | protocol.Failure | Hello

_to_stage = msgspec.msgpack.Decoder(ToStage)
_returned = msgspec.msgpack.Decoder(Returned)
BAD_INPUT = (ValueError, TypeError, KeyError, UnicodeDecodeError)


def micro_batches(inputs: Tensors, count: int) -> list[Tensors]:
    """The batch cut along the item axis into at most ``count`` micro-batches of similar size."""
    items = len(next(iter(inputs.values())))
    size = max(1, math.ceil(items / max(1, count)))
    return [
        {name: array[start : start + size] for name, array in inputs.items()}
        for start in range(0, items, size)
    ]


def run_part(stage: ModelStage, part: Part, tensors: Tensors) -> Part:
    """This stage's work on one micro-batch; an error travels on in place of the activations."""
    try:
        out = stage.run(tensors, part.parameters)
    except BAD_INPUT as exc:
        return Part(part.id, part.index, part.count, {}, {}, f"{type(exc).__name__}: {exc}", True)
    except Exception as exc:  # a model bug must not kill the stage
        return Part(part.id, part.index, part.count, {}, {}, f"{type(exc).__name__}: {exc}", False)
    wire = {name: protocol.to_wire(array) for name, array in out.items()}
    return Part(part.id, part.index, part.count, wire, part.parameters)


@dataclass
class Gathering:
    """The last stage's view of one batch while its micro-batches arrive (in any order)."""

    count: int
    parts: dict[int, Tensors] = field(default_factory=dict)
    failure: Part | None = None

    def add(self, part: Part) -> bool:
        """Record one micro-batch; True once all of the batch's have arrived."""
        if part.error:
            self.failure = self.failure or part
            self.parts[part.index] = {}
        else:
            self.parts[part.index] = {n: protocol.from_wire(t) for n, t in part.tensors.items()}
        return len(self.parts) == self.count

    def reply(self, batch_id: int, load: protocol.Load) -> protocol.Result | protocol.Failure:
        if self.failure is not None:
            return protocol.Failure(batch_id, self.failure.error, self.failure.bad_input, load)
        ordered = [self.parts[i] for i in range(self.count)]
        outputs = {name: np.concatenate([p[name] for p in ordered]) for name in ordered[0]}
        return protocol.Result(batch_id, {n: protocol.to_wire(a) for n, a in outputs.items()}, load)


def serve_first(
    stage: ModelStage,
    context: zmq.Context[Any],
    gateway: str,
    inbound: zmq.Socket[Any],
    outbound: zmq.Socket[Any],
    heartbeat_s: float,
) -> None:
    """Stage 0: batches from the gateway go down the chain; results coming back go to it."""
    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 2000)
    socket.connect(gateway)
    meter = LoadMeter()
    received: dict[int, float] = {}  # batch id -> when it arrived, for its service time
    outbound.send(msgspec.msgpack.encode(Hello()))
    poller = zmq.Poller()
    poller.register(socket, zmq.POLLIN)
    poller.register(inbound, zmq.POLLIN)
    heartbeat_ms = int(heartbeat_s * 1000)
    while True:
        ready = dict(poller.poll(heartbeat_ms))
        if not ready:  # idle: tell the gateway we are alive
            socket.send(protocol.encode(protocol.Heartbeat(load=meter.refresh())))
            continue
        if inbound in ready:
            match _returned.decode(inbound.recv(copy=False).buffer):
                case Hello():
                    socket.send(
                        protocol.encode(
                            protocol.Ready(pid=os.getpid(), spec=stage.spec, load=meter.load)
                        )
                    )
                case protocol.Result() | protocol.Failure() as reply:
                    reply.load = meter.update(
                        time.perf_counter() - received.pop(reply.id, time.perf_counter())
                    )
                    socket.send(protocol.encode(reply), copy=False)
        if socket in ready:
            message = protocol.decode_to_worker(socket.recv(copy=False).buffer)
            if isinstance(message, protocol.Stop):
                outbound.send(protocol.encode(message))
                break
            received[message.id] = time.perf_counter()
            try:
                inputs = {name: protocol.from_wire(t) for name, t in message.inputs.items()}
                parts = micro_batches(inputs, stage.count)
            except BAD_INPUT as exc:
                load = meter.update(0.0)
                received.pop(message.id, None)
                error = f"{type(exc).__name__}: {exc}"
                socket.send(protocol.encode(protocol.Failure(message.id, error, True, load)))
                continue
            for index, tensors in enumerate(parts):
                part = Part(message.id, index, len(parts), {}, message.parameters)
                outbound.send(msgspec.msgpack.encode(run_part(stage, part, tensors)), copy=False)
    socket.close()


def serve_next(stage: ModelStage, inbound: zmq.Socket[Any], outbound: zmq.Socket[Any]) -> None:
    """Stages 1..K-1: run each micro-batch and push it on; the last one gathers and replies (its
    load figures are stage 0's to fill in: the gateway judges the instance as a whole)."""
    gathering: dict[int, Gathering] = {}
    while True:
        message = _to_stage.decode(inbound.recv(copy=False).buffer)
        match message:
            case Hello():
                outbound.send(msgspec.msgpack.encode(message))
            case protocol.Stop():
                if not stage.last:
                    outbound.send(protocol.encode(message))
                break
            case Part(error=""):
                tensors = {name: protocol.from_wire(t) for name, t in message.tensors.items()}
                forward(stage, outbound, gathering, run_part(stage, message, tensors))
            case Part():  # failed upstream: carried on to the last stage unchanged
                forward(stage, outbound, gathering, message)


def forward(
    stage: ModelStage, outbound: zmq.Socket[Any], gathering: dict[int, Gathering], part: Part
) -> None:
    """Push a micro-batch to the next stage or, at the last stage, gather it into its batch."""
    if not stage.last:
        outbound.send(msgspec.msgpack.encode(part), copy=False)
        return
    batch = gathering.setdefault(part.id, Gathering(part.count))
    if batch.add(part):
        del gathering[part.id]
        outbound.send(protocol.encode(batch.reply(part.id, protocol.Load())), copy=False)


def serve(
    index: int,
    count: int,
    reference: str,
    threads: int,
    pull: str,
    push: str,
    gateway: str | None,
    heartbeat_s: float,
) -> None:
    # The gateway owns our lifetime: ignore Ctrl-C sent to the whole process group, die with it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()
    stage = create_stage(reference, index, count, threads)
    stage.load()
    context: zmq.Context[Any] = zmq.Context()
    inbound = context.socket(zmq.PULL)
    inbound.setsockopt(zmq.LINGER, 0)
    inbound.bind(pull)
    outbound = context.socket(zmq.PUSH)
    outbound.setsockopt(zmq.LINGER, 2000)  # a forwarded Stop must get out before we exit
    outbound.connect(push)
    if index == 0:
        if gateway is None:
            raise SystemExit("stage 0 needs --endpoint (the gateway's socket)")
        serve_first(stage, context, gateway, inbound, outbound, heartbeat_s)
    else:
        serve_next(stage, inbound, outbound)
    inbound.close()
    outbound.close()
    context.term()


def main() -> None:
    parser = argparse.ArgumentParser(description="dlproxy pipeline stage (started by the gateway)")
    parser.add_argument("--stage", type=int, required=True, help="this stage's index, from 0")
    parser.add_argument("--stages", type=int, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pull", required=True, help="endpoint this stage binds and reads")
    parser.add_argument("--push", required=True, help="endpoint of the next stage (ring)")
    parser.add_argument("--endpoint", help="the gateway's socket (stage 0 only)")
    parser.add_argument("--heartbeat-s", type=float, default=1.0)
    args = parser.parse_args()
    serve(
        args.stage,
        args.stages,
        args.model,
        args.threads,
        args.pull,
        args.push,
        args.endpoint,
        args.heartbeat_s,
    )


if __name__ == "__main__":
    main()
