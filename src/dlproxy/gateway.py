"""The request pipeline, top to bottom in ``Gateway.infer``.

validate -> (cache, coalescing) -> scheduler picks an instance -> its batch queue -> worker ->
split results. A model with several versions may split its plain route's traffic between them
and mirror a share to a shadow version (``traffic.Split``). A request whose instance dies while holding it is retried on another instance
(inference is idempotent); with hedging, one that has no answer after ``hedge_after`` is also sent
to a second instance and the first answer wins. Retries and hedges draw on one retry budget. Every
other failure is answered once, as a domain error the HTTP layer maps.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from dlproxy.batching.batcher import units_of
from dlproxy.caching.coalesce import Coalescer
from dlproxy.caching.keys import item_keys
from dlproxy.caching.tiered import TieredCache
from dlproxy.errors import (
    BadRequest,
    DeadlineExceeded,
    InstanceFailed,
    ModelNotFound,
    Overloaded,
    PayloadTooLarge,
    QueryOfDeath,
)
from dlproxy.histogram import LATENCY_BUCKETS, Histogram
from dlproxy.instances.base import Instance
from dlproxy.instances.health import RetryBudget
from dlproxy.instances.pool import InstancePool
from dlproxy.traffic import ShadowStats, Split, similarity
from dlproxy.types import (
    InferenceRequest,
    InferenceResponse,
    ModelSpec,
    TensorSpec,
    datatype_name,
    mismatch,
)

log = logging.getLogger("dlproxy.gateway")

TEXTS_PER_ITEM = 16
"""Most text (BYTES) elements per item a request may hold: each costs a Python step to read."""

# Request parameters that steer the transport, not the model: never sent to a worker.
TRANSPORT_PARAMETERS = frozenset(
    {"binary_outputs", "binary_data_output", "encoding_format", "dimensions", "user", "priority"}
)


class OnDemand(Protocol):
    """Loads a model the gateway does not serve yet when a request names it (the memory budget,
    ``lifecycle.ModelControl``)."""

    def knows(self, model: str) -> bool:
        """Whether ``model`` can be loaded on demand."""
        ...

    async def ensure(self, model: str, deadline: float | None) -> None:
        """Return once ``model`` is served; DeadlineExceeded or Overloaded otherwise."""
        ...


@dataclass(frozen=True, slots=True)
class Limits:
    max_items: int = 256
    max_text_bytes: int = 65536
    max_attempts: int = 3
    max_request_units: int = 4096
    """Batch units one request may take (``batching.units_of``: items, or a model's windows of
    text): bounds how long one request can hold an instance."""


class Gateway:
    def __init__(
        self,
        pools: Iterable[InstancePool],
        limits: Limits,
        cache: TieredCache | None = None,
        coalesce: bool = True,
        retry_budget: RetryBudget | None = None,
        hedge_after: float | None = None,
        defaults: dict[str, str] | None = None,
        splits: dict[str, Split] | None = None,
    ) -> None:
        self.versions: dict[str, dict[str, InstancePool]] = {}
        for pool in pools:
            versions = self.versions.setdefault(pool.name, {})
            if pool.version in versions:  # it would be unreachable, and never drained
                raise ValueError(f"model '{pool.name}' version '{pool.version}' is served twice")
            versions[pool.version] = pool
        defaults = defaults or {}
        # The default version of each model: what the plain routes, metrics and scaling see.
        self.pools = {
            name: versions[defaults.get(name, max(versions, key=_version_order))]
            for name, versions in self.versions.items()
        }
        self.splits = dict(splits or {})  # model -> its traffic between versions, and its shadow
        self.shadows: dict[tuple[str, str], ShadowStats] = {}  # (model, shadow version)
        self.limits = limits
        self.cache = cache
        self.coalescer = Coalescer() if coalesce else None
        self.retry_budget = retry_budget or RetryBudget()  # retries <= 20% of requests (+10/s)
        self.hedge_after = hedge_after
        self.started = False  # set once the initial instances are up
        self.retries: Counter[tuple[str, str]] = Counter()
        # Requests per (model, version): the autoscaler's load signal.
        self.arrivals: Counter[tuple[str, str]] = Counter()
        self.scaling_decisions: Counter[tuple[str, str]] = Counter()
        # Models loaded on demand (the memory budget): which are in use, and since when idle.
        self.on_demand: OnDemand | None = None
        self.memory_budget: int | None = None  # bytes, when models load on demand
        self.active: Counter[str] = Counter()  # requests in flight (or waiting for a load)
        self.last_used: dict[str, float] = {}  # model -> when a request last reached it
        self.load_waits: dict[str, Histogram] = {}  # model -> how long requests waited for it
        self.model_events: Counter[tuple[str, str, str]] = Counter()  # (model, event, reason)
        self._tasks: set[asyncio.Future[Any]] = set()

    @property
    def ready(self) -> bool:
        return self.started and all(pool.ready for pool in self.all_pools())

    def install(
        self, model: str, pools: list[InstancePool], default: str, split: Split | None = None
    ) -> list[InstancePool]:
        """Serve ``pools`` (started, every one a version of ``model``) from now on, ``default``
        on the plain routes unless ``split`` shares them out; returns the pools no longer served
        (those not among ``pools``), for the caller to drain."""
        old = [p for p in self.versions.get(model, {}).values() if all(p is not q for q in pools)]
        self.versions[model] = {pool.version: pool for pool in pools}
        self.pools[model] = self.versions[model][default]
        if split is None:
            self.splits.pop(model, None)
        else:
            self.splits[model] = split
        return old

    def uninstall(self, model: str) -> list[InstancePool] | None:
        """Stop serving ``model`` (new requests get 404 at once); its pools, to drain, or None."""
        self.splits.pop(model, None)
        self.pools.pop(model, None)
        versions = self.versions.pop(model, None)
        return None if versions is None else list(versions.values())

    def all_pools(self) -> list[InstancePool]:
        """Every version of every model."""
        return [pool for versions in self.versions.values() for pool in versions.values()]

    def pool(self, model: str, version: str = "") -> InstancePool:
        """The pool of ``model`` (its default version, or ``version``). A model served without
        versions (``--model``) answers every version, as it did before versions existed."""
        try:
            versions = self.versions[model]
        except KeyError:
            served = ", ".join(sorted(self.pools)) or "none"
            raise ModelNotFound(f"model '{model}' is not served here (served: {served})") from None
        if not version or "" in versions:  # "" only ever stands alone
            return self.pools[model]
        try:
            return versions[version]
        except KeyError:
            have = ", ".join(sorted(versions, key=_version_order))
            raise ModelNotFound(
                f"model '{model}' has no version '{version}' served (served: {have})"
            ) from None

    def route(self, request: InferenceRequest) -> InstancePool:
        """The pool that answers ``request``: the version it names, else its model's split's
        pick, else the default version."""
        if self.splits and not request.version:
            split = self.splits.get(request.model)
            if split is not None:
                chosen = split.pick(request)
                versions = self.versions.get(request.model, {})
                if chosen in versions:
                    return versions[chosen]
        return self.pool(request.model, request.version)

    def refuse_early(self, model: str, version: str = "", client: str = "") -> None:
        """Raise Overloaded, before the request's body is read and decoded, when every ready
        instance of its pool would refuse even one item now (a refusal under overload then
        costs the gateway next to nothing). A model that splits its traffic, or one not
        loaded, is left to the full path."""
        pool = self._pool_named(model, version)
        if model in self.splits or pool is None:
            return
        first: Overloaded | None = None
        for instance in pool.instances:
            if instance.state == "ready":
                refusal = instance.batcher.refusal(client)
                if refusal is None:
                    return  # this one would take it
                first = first or refusal
        if first is not None:
            raise first

    def _pool_named(self, model: str, version: str) -> InstancePool | None:
        """The pool a route names, if it is served: the version, else the model's default."""
        versions = self.versions.get(model)
        return versions.get(version) if version and versions else self.pools.get(model)

    def check_input(
        self, model: str, name: str, datatype: str, shape: list[int], version: str = ""
    ) -> None:
        """Refuse an input before its data is read, since decoding a huge one is what stalls
        the event loop: the item and text-element limits, and the model's declared inputs when
        it is loaded (an unknown model is answered later, or loaded on demand); what is left
        (input names) is ``validate``'s."""
        _check_items(shape[0] if shape else 0, self.limits)
        pool = self._pool_named(model, version)
        spec = pool.spec if pool is not None else None
        for tensor in spec.inputs if spec is not None else ():
            if tensor.name == name:  # other names are answered once decoded (missing, ...)
                _check_input(name, datatype, shape, tensor)
                break
        if datatype == "BYTES":
            elements = math.prod(shape)
            bound = self.limits.max_items * TEXTS_PER_ITEM
            if elements > bound:
                raise PayloadTooLarge(
                    f"input '{name}' has {elements} text elements; the limit is {bound} per "
                    f"request ({TEXTS_PER_ITEM} per item)"
                )

    async def infer(self, request: InferenceRequest) -> InferenceResponse:
        """The whole pipeline for one request, then its shadow copy when its model has one;
        with models loaded on demand, the model's load first, if it is not served yet."""
        if self.on_demand is None:
            return await self._serve(request)
        model = request.model
        self.active[model] += 1  # from now on the model is busy: never unloaded under us
        try:
            waited = 0.0
            if model not in self.versions and self.on_demand.knows(model):
                started = time.perf_counter()
                await self.on_demand.ensure(model, request.deadline)
                waited = time.perf_counter() - started
                self.load_waits.setdefault(model, Histogram(LATENCY_BUCKETS)).observe(waited)
            self.last_used[model] = time.monotonic()
            response = await self._serve(request)
            response.load_wait = waited
            return response
        finally:
            self.active[model] -= 1
            if self.active[model] <= 0:
                del self.active[model]

    async def _serve(self, request: InferenceRequest) -> InferenceResponse:
        """Validate, cache, coalesce, compute, store; then the shadow copy, if any."""
        pool = self.route(request)
        self.arrivals[pool.name, pool.version] += 1
        spec = pool.spec
        if spec is None:
            raise Overloaded(f"model '{request.model}' is still loading", retry_after=5.0)
        validate(request, spec, self.limits)
        parameters = model_parameters(request, spec)
        try:
            async with asyncio.timeout_at(request.deadline):  # None: no deadline
                if (self.cache is None or not pool.cached) and self.coalescer is None:
                    outputs, instance = await self._compute(pool, request, parameters)
                    response = InferenceResponse(
                        request.model, spec.version, request.id, outputs, instance
                    )
                else:
                    response = await self._infer_items(pool, spec, request, parameters)
        except TimeoutError:
            raise DeadlineExceeded(
                "the request's deadline passed before the model answered"
            ) from None
        if self.splits and not request.version:
            split = self.splits.get(request.model)
            if split is not None and split.mirrors(pool.version):
                self._mirror(split.shadow, request, response)
        return response

    async def _infer_items(
        self,
        pool: InstancePool,
        spec: ModelSpec,
        request: InferenceRequest,
        parameters: dict[str, Any],
    ) -> InferenceResponse:
        """Per item: a cache hit, or a wait on an identical item in flight, or a computation.

        Only the items nobody has or computes go to an instance, as one sub-request.
        """
        keys = item_keys(request, spec.fingerprint, parameters)
        rows: list[Row | None] = [None] * len(keys)
        levels: list[str] = ["miss"] * len(keys)
        if self.cache is not None and pool.cached:
            found = await self.cache.get_many(keys, lambda row: row_fits(row, spec))
            for index, (row, level) in enumerate(found):
                rows[index], levels[index] = row, level
        waits: dict[int, asyncio.Future[Row]] = {}
        mine: list[int] = []
        for index, row in enumerate(rows):
            if row is not None:
                continue
            shared = (
                self.coalescer.join(keys[index], request.deadline)
                if self.coalescer is not None
                else None
            )
            if shared is None:
                mine.append(index)
            else:
                waits[index] = shared
                levels[index] = "coalesced"
        instance = ""
        if mine:
            task = asyncio.ensure_future(self._compute_items(pool, request, parameters, mine, keys))
            self._own(task)
            computed, instance = await asyncio.shield(task)
            for index, row in zip(mine, computed, strict=True):
                rows[index] = row
        for index, shared in waits.items():
            rows[index] = await asyncio.shield(shared)
        outputs = _stack(rows)  # type: ignore[arg-type]
        return InferenceResponse(
            request.model, spec.version, request.id, outputs, instance, _worst(levels)
        )

    async def _compute_items(
        self,
        pool: InstancePool,
        request: InferenceRequest,
        parameters: dict[str, Any],
        indexes: list[int],
        keys: list[bytes],
    ) -> tuple[list[Row], str]:
        """Compute some items of a request, publish them to waiters and store them in the cache.
        The computation's request is the caller's own unless others may join it with their own
        deadlines (see ``Coalescer``)."""
        sub = request if len(indexes) == request.items else _select(request, indexes)
        if self.coalescer is not None and sub.deadline is not None:
            if sub is request:
                sub = dataclasses.replace(request)  # its deadline may be extended by joiners
            self.coalescer.computing([keys[index] for index in indexes], sub)
        try:
            outputs, instance = await self._compute(pool, sub, parameters)
        except BaseException as exc:
            if self.coalescer is not None:
                for index in indexes:
                    self.coalescer.fail(keys[index], exc)
            raise
        rows = [
            {name: array[i : i + 1].copy() for name, array in outputs.items()}
            for i in range(len(indexes))
        ]
        if self.coalescer is not None:
            for index, row in zip(indexes, rows, strict=True):
                self.coalescer.resolve(keys[index], row)
        if self.cache is not None and pool.cached:
            await self.cache.put_many(
                [(keys[index], row) for index, row in zip(indexes, rows, strict=True)]
            )
        return rows, instance

    async def _compute(
        self, pool: InstancePool, request: InferenceRequest, parameters: dict[str, Any]
    ) -> tuple[dict[str, np.ndarray], str]:
        """Send to an instance the scheduler picks; on instance failure retry on another one.

        A request whose batch was held by an instance that died or hung is retried alone (in a
        batch of its own); failing alone as well, it is taken for a query of death and not
        retried again, so it cannot take down every instance, and its batch-mates, retried
        alone too, are served."""
        tried: set[str] = set()
        self.retry_budget.deposit()
        for attempt in range(self.limits.max_attempts):
            instance = pool.choose(request, exclude=frozenset(tried))
            tried.add(instance.id)
            try:
                if self.hedge_after is None:
                    return await instance.submit(request, parameters), instance.id
                return await self._hedged(pool, instance, request, parameters, tried)
            except InstanceFailed as exc:
                if exc.held and request.alone:
                    log.warning("request %s to %s failed alone: not retried", request.id, pool.name)
                    raise QueryOfDeath(
                        f"model '{request.model}': the instance computing this request died or "
                        "hung, and again when it was retried alone; it is not retried again "
                        "(it may be what stops the instances)"
                    ) from None
                if attempt + 1 == self.limits.max_attempts or not self.retry_budget.allow():
                    raise
                request.alone = request.alone or exc.held
                self.retries[request.model, "instance_failed"] += 1
        raise AssertionError("unreachable")

    async def _hedged(
        self,
        pool: InstancePool,
        first: Instance,
        request: InferenceRequest,
        parameters: dict[str, Any],
        tried: set[str],
    ) -> tuple[dict[str, np.ndarray], str]:
        """The first answer of ``first`` or, when it has none after ``hedge_after`` seconds, of a
        second instance (if the retry budget allows one); the loser is cancelled, and a request
        still queued is then never sent. Fails only when every instance asked has failed."""
        racing = {first.submit(request, parameters): first.id}
        try:
            done, _ = await asyncio.wait(racing, timeout=self.hedge_after)
            if not done and self.retry_budget.allow():
                try:
                    second = pool.choose(request, exclude=frozenset(tried))
                    racing[second.submit(request, parameters)] = second.id
                except (Overloaded, InstanceFailed):
                    pass  # nowhere to hedge to, or it is full: keep waiting on the first
                else:
                    tried.add(second.id)
                    self.retries[request.model, "hedge"] += 1
            pending = set(racing)
            while True:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for future in done:
                    if future.exception() is None:
                        return future.result(), racing[future]
                if not pending:
                    raise future.exception()  # type: ignore[misc]  # the last one out
        finally:
            for future in racing:
                if future.done():
                    _settle(future)
                else:
                    future.cancel()

    def _mirror(self, version: str, request: InferenceRequest, answer: InferenceResponse) -> None:
        """Send a copy of ``request`` to the shadow ``version``, off the request's path."""
        stats = self.shadows.setdefault((request.model, version), ShadowStats())
        pool = self.versions.get(request.model, {}).get(version)
        if pool is None or pool.spec is None:
            stats.dropped += 1
            return
        copy = dataclasses.replace(request, deadline=None)  # not bound by the client's wait
        self._own(asyncio.ensure_future(self._shadow(pool, copy, answer.outputs, stats)))

    async def _shadow(
        self,
        pool: InstancePool,
        request: InferenceRequest,
        primary: dict[str, np.ndarray],
        stats: ShadowStats,
    ) -> None:
        """Compute the copy on the shadow version, once (no cache, no retry: a copy must not
        take the retry budget from clients) and compare; a full shadow drops the copy."""
        started = time.perf_counter()
        try:
            assert pool.spec is not None  # checked by _mirror
            validate(request, pool.spec, self.limits)
            instance = pool.choose(request)
            outputs = await instance.submit(request, model_parameters(request, pool.spec))
        except Overloaded:
            stats.dropped += 1
            return
        except Exception:
            stats.errors += 1
            return
        wanted = {name: outputs[name] for name in primary if name in outputs}
        stats.compared(time.perf_counter() - started, similarity(primary, wanted or outputs))

    def _own(self, task: asyncio.Future[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(_settle)
        task.add_done_callback(self._tasks.discard)

    async def close(self, drain_seconds: float = 30.0) -> None:
        """Stop instances (draining them, up to ``drain_seconds``) while the cache writes what
        is pending, then close the cache."""
        if self.cache is not None:
            self.cache.begin_close()
        await asyncio.gather(*(pool.close(drain_seconds) for pool in self.all_pools()))
        if self.cache is not None:
            await self.cache.close()


def _settle(task: asyncio.Future[Any]) -> None:
    """Mark an owned task's error as seen: its awaiter may have left (deadline, disconnect)."""
    if not task.cancelled():
        task.exception()


def _version_order(version: str) -> tuple[int, str]:
    """Versions in order: numbers numerically (2 before 10), others after, by name."""
    return (int(version), "") if version.isdigit() else (1 << 62, version)


Row = dict[str, np.ndarray]
_WORST = {"l1": 0, "l2": 1, "coalesced": 2, "miss": 3}


def _worst(levels: list[str]) -> str:
    return max(levels, key=_WORST.__getitem__)


def _select(request: InferenceRequest, indexes: list[int]) -> InferenceRequest:
    inputs = {name: array[indexes] for name, array in request.inputs.items()}
    return dataclasses.replace(request, inputs=inputs, _digest=None)


def _stack(rows: list[Row]) -> dict[str, np.ndarray]:
    if len(rows) == 1:
        return rows[0]
    return {name: np.concatenate([row[name] for row in rows]) for name in rows[0]}


def model_parameters(request: InferenceRequest, spec: ModelSpec) -> dict[str, object]:
    """The request parameters that reach the model (and its cache keys): those it declares it
    reads, or, when it declares none (``ModelSpec.parameters`` is None), all but the transport's.
    Others are ignored: they must not split batches or cache entries for nothing."""
    if not request.parameters:
        return {}
    if spec.parameters is not None:
        return {k: v for k, v in request.parameters.items() if k in spec.parameters}
    return {k: v for k, v in request.parameters.items() if k not in TRANSPORT_PARAMETERS}


def validate(request: InferenceRequest, spec: ModelSpec, limits: Limits) -> None:
    """Check the request against the model's declared inputs and the gateway's limits."""
    items = request.items
    if items == 0:
        raise BadRequest("the request has no items: send at least one")
    _check_items(items, limits)
    for name, array in request.inputs.items():
        if array.ndim == 0 or array.shape[0] != items:
            raise BadRequest(
                f"input '{name}' has shape {list(array.shape)}; every input needs {items} rows"
            )
    if not spec.inputs:
        return
    expected = {t.name: t for t in spec.inputs}
    missing = expected.keys() - request.inputs.keys()
    if missing:
        raise BadRequest(f"missing input(s) {sorted(missing)} for model '{spec.name}'")
    unexpected = request.inputs.keys() - expected.keys()
    if unexpected:
        raise BadRequest(
            f"unexpected input(s) {sorted(unexpected)}; model '{spec.name}' takes {sorted(expected)}"
        )
    for name, tensor in expected.items():
        array = request.inputs[name]
        _check_input(name, datatype_name(array), array.shape, tensor)
        if tensor.datatype == "BYTES":
            _check_texts(name, array, limits.max_text_bytes)
    units = units_of(request, spec.unit_bytes)
    if units > limits.max_request_units:
        per = f" (one per {spec.unit_bytes} bytes of text)" if spec.unit_bytes else ""
        raise PayloadTooLarge(
            f"the request is {units} units of work{per}; the limit is "
            f"{limits.max_request_units} per request (--max-request-units)"
        )


def row_fits(row: dict[str, np.ndarray], spec: ModelSpec) -> bool:
    """Whether a cached row could be this model's answer for one item: one row per output and,
    where the model declares its outputs, only those, of their datatypes and shapes."""
    for name, array in row.items():
        if array.ndim == 0 or array.shape[0] != 1:
            return False
        if spec.outputs:
            tensor = spec.output(name)
            if tensor is None or mismatch(datatype_name(array), array.shape, tensor):
                return False
    return bool(row)


def _check_items(items: int, limits: Limits) -> None:
    if items > limits.max_items:
        raise PayloadTooLarge(
            f"the request has {items} items; the limit is {limits.max_items} per request"
        )


def _check_input(name: str, datatype: str, shape: Sequence[int], tensor: TensorSpec) -> None:
    """BadRequest unless the input is of the datatype and shape its model declares."""
    part = mismatch(datatype, shape, tensor)
    if part == "datatype":
        raise BadRequest(f"input '{name}' must be {tensor.datatype}, got {datatype}")
    if part == "shape":
        raise BadRequest(
            f"input '{name}' has shape {list(shape)}; the model takes {list(tensor.shape)}"
        )


def _check_texts(name: str, array: np.ndarray, max_bytes: int) -> None:
    for index, item in enumerate(array.ravel()):
        if len(item) > max_bytes:
            raise PayloadTooLarge(
                f"input '{name}' item {index} is {len(item)} bytes; the limit is {max_bytes}"
            )
        if len(item) == 0:
            raise BadRequest(f"input '{name}' item {index} is empty")
        try:
            item.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest(f"input '{name}' item {index} is not valid UTF-8 text") from None
