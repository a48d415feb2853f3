"""A model-parallel instance: one model cut into K consecutive stages held by K processes.

To the pool, batcher and scheduler it is one instance like ``LocalInstance`` (same channel, same
batch queue, same states): stage 0 holds the gateway's socket, and the stages pass micro-batches
along a ring of PUSH/PULL sockets (see ``dlproxy.worker.stage``). The instance lives and dies as a
whole: when any stage exits, the others are killed and what the instance held fails over, as for
a dead worker; the pool then starts a fresh instance (all K stages).

When it pays: when the model does not fit one device's memory (each stage holds only its layers),
or when the stages run on different devices. On one small CPU it does not (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from typing import Any

import zmq.asyncio

from dlproxy.instances.channel import WorkerChannel
from dlproxy.instances.local import LocalInstance
from dlproxy.models.stages import check_stages

log = logging.getLogger("dlproxy.instances")


class PipelineInstance(LocalInstance):
    """K stage processes serving one model as one instance."""

    def __init__(
        self, context: zmq.asyncio.Context, reference: str, *, stages: int, **options: Any
    ) -> None:
        check_stages(reference, stages)
        super().__init__(context, reference, **options)
        self.stages = stages
        self.pids: list[int] = []
        self._processes: list[asyncio.subprocess.Process] = []

    def _links(self) -> list[str]:
        """The endpoint each stage binds and reads (stage 0's is where results come back)."""
        base = self._endpoint.removesuffix(".sock")
        return [f"{base}-stage{i}.sock" for i in range(self.stages)]

    def _command(self, index: int) -> list[str]:
        links = self._links()
        command = [
            sys.executable,
            "-m",
            "dlproxy.worker.stage",
            "--stage",
            str(index),
            "--stages",
            str(self.stages),
            "--model",
            self.reference,
            "--threads",
            str(self.threads),
            "--pull",
            links[index],
            "--push",
            links[(index + 1) % self.stages],
        ]
        return command + (["--endpoint", self._endpoint] if index == 0 else [])

    async def start(self) -> None:
        """Start every stage; ready once stage 0 reports that the whole ring is up."""
        self.state = "starting"
        self._channel = WorkerChannel(self._context, self._endpoint)
        self._channel.start()
        for index in range(self.stages):
            self._processes.append(await asyncio.create_subprocess_exec(*self._command(index)))
        self._process = self._processes[0]  # the one the liveness watchdog and stop() look at
        self.pid = self._process.pid
        self.pids = [p.pid for p in self._processes]
        exited = asyncio.ensure_future(self._first_exit())
        done, _ = await asyncio.wait(
            {self._channel.ready, exited},
            timeout=self.start_timeout,
            return_when=asyncio.FIRST_COMPLETED,
        )
        exited.cancel()
        if self._channel.ready not in done:
            codes = [p.returncode for p in self._processes]
            await self._kill()
            raise RuntimeError(
                f"pipeline of {self.stages} stages for '{self.reference}' did not start "
                f"(exit codes {codes})"
            )
        self.spec = self._channel.ready.result().spec
        self.state = "ready"
        self._watch = asyncio.create_task(self._watch_process(), name=f"watch {self.id}")
        self._watchdog = asyncio.create_task(self._watch_liveness(), name=f"watchdog {self.id}")
        log.info(
            "instance %s ready (%d stages, pids %s, model %s)",
            self.id,
            self.stages,
            self.pids,
            self.reference,
        )

    async def _first_exit(self) -> tuple[int, int]:
        """(stage index, exit code) of the first stage process to exit."""
        waits = {asyncio.ensure_future(p.wait()): i for i, p in enumerate(self._processes)}
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        first = next(iter(done))
        return waits[first], first.result()

    async def _watch_process(self) -> None:
        """Any stage's exit is the instance's death: kill the rest, fail over what it held."""
        assert self._channel is not None
        index, code = await self._first_exit()
        if self._stopping:
            return
        log.warning(
            "instance %s: stage %d (pid %s) exited with code %s; failing over",
            self.id,
            index,
            self.pids[index],
            code,
        )
        self.state = "failed"
        orphans = self.batcher.drain_queue()
        self._channel.fail_all(f"instance {self.id} died (stage {index}, exit code {code})")
        await self._kill()
        self.on_failure(self, orphans)

    async def stop(self, drain: bool = True, drain_seconds: float = 30.0) -> None:
        """Stop as a plain worker stops (the Stop travels down the chain), then make sure that
        every stage has gone."""
        await super().stop(drain, drain_seconds)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await asyncio.gather(*(p.wait() for p in self._processes))
        await self._kill()

    async def _kill(self) -> None:
        for process in self._processes:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
        await asyncio.gather(*(p.wait() for p in self._processes))
