"""The instances of one model, the scheduling policy that picks among them, and their upkeep.

The pool adds and removes instances at run time and restarts one that dies. A dead instance's
queued requests are re-submitted to the others; its in-flight ones fail with InstanceFailed and the
gateway retries them (inference is idempotent). Remote servers (``remotes``) are attached, not made
by the factory: the pool neither restarts them nor counts them when it scales.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

from dlproxy.autoscaling.limits import ScalingPlan
from dlproxy.batching.batcher import Outputs, Pending
from dlproxy.errors import InstanceFailed, Overloaded
from dlproxy.instances.base import FailureHandler, Instance
from dlproxy.instances.health import ejection_allowed, panicking
from dlproxy.scheduling.base import NoHealthyInstance, SchedulingPolicy
from dlproxy.types import InferenceRequest, ModelSpec

log = logging.getLogger("dlproxy.pool")

SIDELINED = frozenset({"ejected", "unhealthy"})
"""States in which health checks keep a remote instance out of rotation (but it may be fine)."""

MAX_RESTART_DELAY = 30.0
"""Longest wait between two attempts to replace a dead instance."""


class InstancePool:
    def __init__(
        self,
        name: str,
        policy: SchedulingPolicy,
        factory: Callable[[FailureHandler], Instance],
        restart_delay: float = 0.5,
        remotes: Sequence[Callable[[InstancePool], Instance]] = (),
        version: str = "",
        initial: int | None = None,
        scaling: ScalingPlan | None = None,
        cached: bool = True,
    ) -> None:
        self.name = name
        self.version = version  # "" for a model served without versions (--model)
        self.initial = initial  # instances to start with; None: the server's count
        self.scaling = scaling  # how the autoscaler scales it; None: it does not
        self.cached = cached  # whether its results go to the result cache (if there is one)
        self.policy = policy
        self.instances: list[Instance] = []
        self.remotes = tuple(remotes)  # remote servers, built for this pool and attached at start
        self._attached: set[str] = set()
        self._factory = factory
        self._restart_delay = restart_delay
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self.restarts = 0
        self.panic_routed = 0  # requests routed in panic mode (see ``panicking``)
        self.failed_starts = 0  # replacements that failed to start (each retried)
        self.last_start_error = ""
        self.items_by_instance: dict[str, int] = {}  # items computed by instances that have left
        self.retired_tokens = (0, 0)  # (real, padded) tokens run by instances that have left

    @property
    def spec(self) -> ModelSpec | None:
        for instance in self.instances:
            if instance.spec is not None:
                return instance.spec
        return None

    @property
    def rss_bytes(self) -> int:
        """Resident memory of the pool's workers, as they last reported."""
        return sum(i.load.rss_bytes for i in self.instances)

    def by_id(self, instance_id: str) -> Instance:
        for instance in self.instances:
            if instance.id == instance_id:
                return instance
        raise KeyError(instance_id)

    def may_eject(self) -> bool:
        """Asked by an instance's outlier detector before it ejects: the pool's cap."""
        ejected = sum(i.state == "ejected" for i in self.instances)
        return ejection_allowed(ejected, len(self.instances))

    def panicking(self) -> bool:
        """Whether health has taken out so many remote instances that the pool routes to them
        all again (Envoy's panic mode); only remote servers are ever ejected or unhealthy."""
        if not self._attached:
            return False
        healthy = sum(i.state == "ready" for i in self.instances)
        sidelined = sum(i.state in SIDELINED for i in self.instances)
        return sidelined > 0 and panicking(healthy, healthy + sidelined)

    def choose(self, request: InferenceRequest, exclude: frozenset[str] = frozenset()) -> Instance:
        """The instance the policy picks among the ready ones (minus ``exclude``); in panic,
        among the ejected and unhealthy ones too."""
        candidates = [i for i in self.instances if i.id not in exclude]
        views = [i.view() for i in candidates]
        if self.panicking():
            self.panic_routed += 1
            views = [
                dataclasses.replace(v, healthy=True) if i.state in SIDELINED else v
                for i, v in zip(candidates, views, strict=True)
            ]
        try:
            return self.by_id(self.policy.choose(request, views))
        except NoHealthyInstance:
            raise Overloaded(
                f"model '{self.name}' has no ready instance", retry_after=1.0
            ) from None

    @property
    def ready(self) -> bool:
        return any(i.state == "ready" for i in self.instances)

    async def add(self) -> Instance:
        """Start one more instance; it gets traffic only once its model is loaded."""
        instance = self._factory(self._on_failure)
        self.instances.append(instance)
        try:
            await instance.start()
        except BaseException:
            self.instances.remove(instance)
            raise
        return instance

    async def attach(self, instance: Instance) -> Instance:
        """Add an instance built elsewhere (a remote server); it gets traffic once it is ready."""
        self.instances.append(instance)
        self._attached.add(instance.id)
        try:
            await instance.start()
        except BaseException:
            self.instances.remove(instance)
            self._attached.discard(instance.id)
            raise
        return instance

    async def remove(self, instance: Instance | None = None) -> None:
        """Drain one instance (the newest made by the factory by default) and stop it, losing
        no request."""
        if instance is None:
            instance = self.made()[-1]
        await instance.stop(drain=True)
        self._forget(instance)

    async def scale_to(self, count: int) -> None:
        """Make ``count`` the number of factory-made instances (attached ones are not counted)."""
        while len(self.made()) < count:
            await self.add()
        while len(self.made()) > count:
            await self.remove()

    def made(self) -> list[Instance]:
        """The instances the factory made: what the pool scales (attached ones are not)."""
        return [i for i in self.instances if i.id not in self._attached]

    async def close(self, drain_seconds: float = 30.0) -> None:
        """Drain (up to ``drain_seconds``) and stop every instance (graceful shutdown)."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(
            *(i.stop(drain=True, drain_seconds=drain_seconds) for i in self.instances),
            return_exceptions=True,
        )

    def _on_failure(self, instance: Instance, orphans: list[Pending]) -> None:
        for pending in orphans:
            self._resubmit(pending, exclude=frozenset({instance.id}))
        if not self._closing:
            self._own(self._restart(instance))

    def _resubmit(self, pending: Pending, exclude: frozenset[str]) -> None:
        """Move a queued request to another instance, chaining its future to the new one."""
        try:
            target = self.choose(pending.request, exclude)
            moved = target.submit(pending.request, pending.parameters)
        except (Overloaded, InstanceFailed) as exc:
            if not pending.future.done():
                pending.future.set_exception(exc)
            return
        moved.add_done_callback(lambda done: _chain(done, pending.future))

    async def _restart(self, instance: Instance) -> None:
        """Replace a dead instance, retrying a replacement that fails to start with a back-off
        (doubling up to ``MAX_RESTART_DELAY``): a failed one stays listed, in state ``failed``,
        until the next attempt, so the loss shows in ``/admin/instances`` and the metrics.
        Scaling the pool down past it ends the retries."""
        await asyncio.sleep(self._restart_delay)
        await instance.stop(drain=False)
        if instance not in self.instances or self._closing:
            return
        self._forget(instance)
        self.restarts += 1
        delay = self._restart_delay
        while not self._closing:
            replacement = self._factory(self._on_failure)
            self.instances.append(replacement)
            try:
                await replacement.start()
                return
            except Exception as exc:
                self.failed_starts += 1
                self.last_start_error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "could not restart an instance of %s (%s); again in %.1f s",
                    self.name,
                    self.last_start_error,
                    delay,
                )
            await asyncio.sleep(delay)
            if replacement not in self.instances:  # scaled away meanwhile
                return
            self._forget(replacement)
            delay = min(2 * delay, MAX_RESTART_DELAY)

    def _forget(self, instance: Instance) -> None:
        self.instances.remove(instance)
        self._attached.discard(instance.id)
        statistics = instance.batcher.statistics()
        real, padded = self.retired_tokens
        self.retired_tokens = (real + statistics.tokens, padded + statistics.padded_tokens)
        items = statistics.items
        if items:  # one metric series per instance that computed something, not per attempt
            self.items_by_instance[instance.id] = items

    def _own(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _chain(source: asyncio.Future[Outputs], target: asyncio.Future[Outputs]) -> None:
    if target.done():
        return
    if source.cancelled():
        target.cancel()
    elif (exc := source.exception()) is not None:
        target.set_exception(exc)
    else:
        target.set_result(source.result())
