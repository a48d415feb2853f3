"""A local instance: one worker process, its channel and its batch queue.

The instance owns the process: it starts it, watches it (exit and heartbeats), fails over what it
held when it dies, and restarts it. States: starting -> ready -> (draining ->) stopped, or failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import sys
import tempfile
import time
from typing import Any, ClassVar

import zmq.asyncio

from dlproxy import protocol
from dlproxy.instances.base import BatchedInstance, FailureHandler, InstanceOptions, ignore_failure
from dlproxy.instances.channel import WorkerChannel

log = logging.getLogger("dlproxy.instances")
_numbers = itertools.count(1)


class LocalInstance(BatchedInstance):
    """One worker process serving one model."""

    serial = True  # one batch at a time: the next is sent just before the worker is free
    held_here: ClassVar[int] = 0
    """Batches that every local worker of this gateway process holds: a batch sent while there
    are none may borrow the idle workers' cores (``InstanceOptions.borrow_threads``)."""

    def __init__(
        self,
        context: zmq.asyncio.Context,
        reference: str,
        options: InstanceOptions,
        on_failure: FailureHandler = ignore_failure,
        *,
        threads: int,
    ) -> None:
        number = next(_numbers)
        super().__init__(options, f"w{number}", on_failure)
        self.reference = reference
        self.threads = threads
        self.state = "starting"
        self._watchdog: asyncio.Task[None] | None = None
        self._context = context
        self._endpoint = f"ipc://{tempfile.gettempdir()}/dlproxy-{os.getpid()}-{number}.sock"
        self._process: asyncio.subprocess.Process | None = None
        self._processes: list[asyncio.subprocess.Process] = []
        self.pids: list[int] = []
        self._channel: WorkerChannel | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False

    def _send(self, inputs: Any, parameters: Any) -> Any:
        assert self._channel is not None
        borrow = LocalInstance.held_here == 0 and self.options.borrow_threads > self.threads
        reply = self._channel.send_batch(inputs, parameters, borrow)
        LocalInstance.held_here += 1
        reply.add_done_callback(_released)
        return reply

    @property
    def load(self) -> protocol.Load:
        """The worker's latest figures (service time, CPU, memory), from its replies."""
        return self._channel.load if self._channel is not None else protocol.Load()

    def _commands(self) -> list[list[str]]:
        """The processes that make the instance: one worker (a pipelined instance has more; the
        first always holds the gateway's socket)."""
        worker = ["-m", "dlproxy.worker.main", "--endpoint", self._endpoint]
        model = ["--model", self.reference, "--threads", str(self.threads)]
        if self.options.borrow_threads > self.threads:
            model += ["--borrow-threads", str(self.options.borrow_threads)]
        if self.options.model_options:
            model += ["--options", self.options.model_options]
        return [[sys.executable, *worker, *model]]

    async def start(self) -> None:
        """Start the process(es) and wait until the model is loaded; raises if one dies first."""
        self.state = "starting"
        self._channel = WorkerChannel(self._context, self._endpoint)
        self._channel.start()
        for command in self._commands():
            self._processes.append(await asyncio.create_subprocess_exec(*command))
        self._process = self._processes[0]  # the one the liveness watchdog looks at
        self.pid = self._process.pid
        self.pids = [p.pid for p in self._processes]
        exited = asyncio.ensure_future(self._first_exit())
        waiting: set[asyncio.Future[Any]] = {self._channel.ready, exited}
        done, _ = await asyncio.wait(
            waiting,
            timeout=self.options.start_timeout,
            return_when=asyncio.FIRST_COMPLETED,
        )
        exited.cancel()
        ready = self._channel.ready
        if exited in done and not ready.done():  # its last words may still be on the way
            await asyncio.wait({ready}, timeout=0.5)
        failure = ready.exception() if ready.done() else None
        if ready not in done or failure is not None:
            codes = [p.returncode for p in self._processes]
            await self._kill()
            self.state = "failed"
            # Its socket too: an open socket would block the zmq context's term() at shutdown.
            await self._channel.close()
            if failure is not None:
                raise RuntimeError(f"instance of '{self.reference}' failed to load: {failure}")
            raise RuntimeError(f"instance of '{self.reference}' did not start (exit codes {codes})")
        self._adopt(self._channel.ready.result().spec)  # no await since it became ready
        self.state = "ready"
        self._watch = asyncio.create_task(self._watch_process(), name=f"watch {self.id}")
        self._watchdog = asyncio.create_task(self._watch_liveness(), name=f"watchdog {self.id}")
        log.info("instance %s ready (pids %s, model %s)", self.id, self.pids, self.reference)

    async def _first_exit(self) -> tuple[int, int]:
        """(index, exit code) of the first of the instance's processes to exit."""
        waits = {asyncio.ensure_future(p.wait()): i for i, p in enumerate(self._processes)}
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        first = next(iter(done))
        return waits[first], first.result()

    async def _watch_process(self) -> None:
        """Any process's exit is the instance's death: kill the rest, fail over what it held."""
        assert self._channel is not None
        index, code = await self._first_exit()
        if self._stopping:
            return
        log.warning(
            "instance %s (pid %s) exited with code %s; failing over",
            self.id,
            self.pids[index],
            code,
        )
        self.state = "failed"
        orphans = self.batcher.drain_queue()
        self._channel.fail_all(f"instance {self.id} died (exit code {code})")
        await self._kill()
        self.on_failure(self, orphans)

    async def _watch_liveness(self) -> None:
        """Kill a worker that holds a batch too long or stops sending heartbeats; its exit then
        fails over what it held, as for a crash."""
        assert self._channel is not None
        while self._process is not None and self._process.returncode is None:
            await asyncio.sleep(min(1.0, self.options.heartbeat_timeout / 2))
            silent = time.monotonic() - self._channel.last_heard
            busy = self._channel.oldest_pending_age()
            allowed = self.batcher.hold_limit(self.options.hang_timeout)
            # Computing, a worker sends nothing: then only the age of its oldest batch counts.
            if busy > allowed or (busy == 0.0 and silent > self.options.heartbeat_timeout):
                reason = (
                    f"held a batch for {busy:.1f} s"
                    if busy > allowed
                    else f"silent for {silent:.1f} s"
                )
                log.warning("instance %s (pid %s) %s: killing it", self.id, self.pid, reason)
                self.hung += 1
                await self._kill()
                return

    async def stop(self, drain: bool = True, drain_seconds: float = 30.0) -> None:
        """Stop taking requests, finish what is held (when ``drain``), then end the process."""
        self.state = "draining"
        await self._drain(drain, drain_seconds)
        self._stopping = True
        if self._channel is not None:
            self._channel.send_stop()
        try:  # the Stop reaches every process (a pipeline passes it down its ring)
            async with asyncio.timeout(5):
                await asyncio.gather(*(p.wait() for p in self._processes))
        except TimeoutError:
            await self._kill()
        if self._channel is not None:
            await self._channel.close()
        for task in (self._watch, self._watchdog):
            if task is not None:
                task.cancel()
        self.state = "stopped"

    async def _kill(self) -> None:
        for process in self._processes:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
        await asyncio.gather(*(p.wait() for p in self._processes))


def _released(reply: asyncio.Future[Any]) -> None:
    LocalInstance.held_here -= 1
