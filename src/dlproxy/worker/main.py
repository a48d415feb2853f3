"""Worker process entry: connect, load the model, then recv batch -> predict -> reply, forever.

A model error on one batch is answered as a ``Failure`` and the worker lives on; only the gateway
decides when a worker stops (``Stop``) or is killed. One thread owns the socket (zmq sockets are
not thread-safe): while idle it sends a heartbeat every ``heartbeat_s``; while it computes, the
gateway judges it by how long it has held the batch instead.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import signal
import sys
import time
import traceback

import psutil
import zmq

from dlproxy import protocol
from dlproxy.extras import missing
from dlproxy.models.base import Model
from dlproxy.models.registry import create_model, extra_for


class LoadMeter:
    """Load figures, with the costly process readings taken at most twice a second."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._process.cpu_percent()
        self._read_at = 0.0
        self.load = protocol.Load(rss_bytes=self._process.memory_info().rss)

    def update(self, service_time: float) -> protocol.Load:
        self.load.service_time = service_time
        self.load.batches += 1
        return self.refresh()

    def refresh(self) -> protocol.Load:
        """The figures, with the process readings renewed if they are older than 0.5 s."""
        now = time.monotonic()
        if now - self._read_at > 0.5:
            self._read_at = now
            self.load.cpu_percent = self._process.cpu_percent()
            self.load.rss_bytes = self._process.memory_info().rss
        return self.load


def die_with_parent() -> None:
    """Ask Linux to kill us when the gateway dies, however it dies (even SIGKILL)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the gateway's Stop message is all we have
        return
    if os.getppid() == 1:  # the gateway died before prctl took effect
        os._exit(1)


def serve(
    endpoint: str,
    reference: str,
    threads: int,
    heartbeat_s: float,
    options: str = "",
    borrow_threads: int = 0,
) -> None:
    # The gateway owns our lifetime: ignore Ctrl-C sent to the whole process group, die with it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()
    context = zmq.Context()
    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 2000)
    socket.connect(endpoint)

    def send(message: protocol.FromWorker) -> None:
        socket.send(protocol.encode(message), copy=False)

    try:
        model = create_model(reference, threads=threads, options=json.loads(options or "{}"))
        model.load()
        if borrow_threads > threads:
            model.borrow_threads(borrow_threads)
    except Exception as exc:  # tell the gateway why, so the operator sees it where they look
        lacking = (
            missing(exc, f"model '{reference}'", extra_for(reference))
            if isinstance(exc, ImportError)
            else None
        )
        if lacking is None:
            traceback.print_exc()
        send(protocol.LoadFailed(str(lacking) if lacking else f"{type(exc).__name__}: {exc}"))
        socket.close()  # lingers until the message is out
        context.term()
        sys.exit(1)
    meter = LoadMeter()
    send(protocol.Ready(pid=os.getpid(), spec=model.spec, load=meter.load))

    poller = zmq.Poller()
    poller.register(socket, zmq.POLLIN)
    heartbeat_ms = int(heartbeat_s * 1000)
    while True:
        if not poller.poll(heartbeat_ms):  # idle: tell the gateway we are alive
            send(protocol.Heartbeat(load=meter.refresh()))
            continue
        message = protocol.decode_to_worker(socket.recv(copy=False).buffer)
        if isinstance(message, protocol.Stop):
            break
        send(run_batch(model, message, meter))
    model.close()
    socket.close()
    context.term()


def run_batch(
    model: Model, batch: protocol.Batch, meter: LoadMeter
) -> protocol.Result | protocol.Failure:
    """One batch from wire tensors to the reply: what a worker does with every batch it gets."""
    started = time.perf_counter()
    model.borrowing = batch.borrow
    try:
        inputs = {name: protocol.from_wire(t) for name, t in batch.inputs.items()}
        outputs = model.predict(inputs, batch.parameters)
        wire = {name: protocol.to_wire(array) for name, array in outputs.items()}
    except (ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
        load = meter.update(time.perf_counter() - started)
        return protocol.Failure(batch.id, f"{type(exc).__name__}: {exc}", True, load)
    except Exception as exc:  # a model bug must not kill the worker
        load = meter.update(time.perf_counter() - started)
        return protocol.Failure(batch.id, f"{type(exc).__name__}: {exc}", False, load)
    load = meter.update(time.perf_counter() - started)
    return protocol.Result(batch.id, wire, load, *model.tokens())


def main() -> None:
    parser = argparse.ArgumentParser(description="dlproxy worker process (started by the gateway)")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--heartbeat-s", type=float, default=1.0)
    parser.add_argument("--options", default="", help="a Python model's options (JSON)")
    parser.add_argument(
        "--borrow-threads", type=int, default=0, help="threads a batch may use on an idle machine"
    )
    args = parser.parse_args()
    serve(
        args.endpoint,
        args.model,
        args.threads,
        args.heartbeat_s,
        args.options,
        args.borrow_threads,
    )


if __name__ == "__main__":
    main()
