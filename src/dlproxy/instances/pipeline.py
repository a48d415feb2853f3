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

import sys

import zmq.asyncio

from dlproxy.instances.base import FailureHandler, InstanceOptions, ignore_failure
from dlproxy.instances.local import LocalInstance
from dlproxy.models.stages import check_stages


class PipelineInstance(LocalInstance):
    """K stage processes serving one model as one instance."""

    serial = False  # K stages work on K batches at once

    def __init__(
        self,
        context: zmq.asyncio.Context,
        reference: str,
        options: InstanceOptions,
        on_failure: FailureHandler = ignore_failure,
        *,
        threads: int,
        stages: int,
    ) -> None:
        check_stages(reference, stages)
        super().__init__(context, reference, options, on_failure, threads=threads)
        self.stages = stages

    def _links(self) -> list[str]:
        """The endpoint each stage binds and reads (stage 0's is where results come back)."""
        base = self._endpoint.removesuffix(".sock")
        return [f"{base}-stage{i}.sock" for i in range(self.stages)]

    def _commands(self) -> list[list[str]]:
        links = self._links()
        commands = []
        for index in range(self.stages):
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
            commands.append(command + (["--endpoint", self._endpoint] if index == 0 else []))
        return commands
