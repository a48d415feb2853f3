"""Models of the repository loaded, reloaded and unloaded at run time, without dropping a request.

The KServe v2 repository extension (``POST /v2/repository/index``, ``.../models/{m}/load``,
``.../unload``) calls ``ModelControl``. A load reads the model's folder again, starts and warms
the instances of every version its policy serves that is new or changed (its files, its
reference or the model's settings), and only then switches the gateway to them; versions that did
not change keep their running instances (so editing only the traffic split is instant), and the
versions replaced or no longer served are drained (what they hold is answered) and stopped. An unload takes
the model out of the gateway at once (new requests get 404) and drains it. Calls on one model are
serialised by a lock, so a load racing an unload ends as the later call says. A version that
fails to start leaves the previous ones serving and is reported, with its reason, in the index.
With ``--repository-poll-s`` the repository is also scanned that often: a model whose folder
changed (a version added or removed, a file or its config edited) is reloaded, a new one loaded,
and one whose folder is gone unloaded.

With a memory budget (``--memory-budget``) models load on their first request (``ensure``, which
the gateway calls; requests wait up to their deadline), and a load that would not fit first
unloads the least recently used models that have no request in flight (``eviction.to_evict``),
sized by their workers' measured memory. A load that cannot start (everything else busy for
``ROOM_WAIT`` s, or the model failed to load a moment ago) is answered 503 with ``Retry-After``.
Every load, unload and eviction is logged with its reason and counted (``Gateway.model_events``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import zmq.asyncio

from dlproxy.assembly import Deployment, build_pools, entry_deployments, start_pools
from dlproxy.errors import BadRequest, DeadlineExceeded, ModelNotFound, Overloaded
from dlproxy.eviction import Resident, to_evict
from dlproxy.gateway import Gateway
from dlproxy.instances.pool import InstancePool
from dlproxy.models import repository
from dlproxy.settings import Settings

log = logging.getLogger("dlproxy.lifecycle")
ROOM_WAIT = 30.0  # s a load waits for a busy model to go idle before it gives up (503)
FAILED_PAUSE = 10.0  # s after a failed load on demand during which requests get 503 at once
MiB = 1024 * 1024


@dataclass(frozen=True)
class IndexEntry:
    """One row of the repository index: a model version and its state (Triton's words)."""

    name: str
    version: str
    state: str  # READY | LOADING | UNAVAILABLE
    reason: str = ""


class ModelControl:
    """Load and unload the models of ``settings.model_repository`` in ``gateway``."""

    def __init__(
        self,
        settings: Settings,
        context: zmq.asyncio.Context,
        gateway: Gateway,
        make_pools: Callable[[list[Deployment]], list[InstancePool]] | None = None,
    ) -> None:
        assert settings.model_repository is not None
        self.root = Path(settings.model_repository)
        self.settings = settings
        self.context = context
        self.gateway = gateway
        self.budget = settings.memory_budget
        self._make_pools = make_pools or functools.partial(build_pools, settings, context)
        self._room = asyncio.Lock()  # one load at a time claims budget
        self._demanded: dict[str, asyncio.Task[None]] = {}  # loads on demand, shared by waiters
        self._failed_at: dict[str, float] = {}  # model -> when its last load on demand failed
        self._sizes: dict[str, int] = {}  # model -> bytes its workers held when last measured
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._loading: set[str] = set()
        # model -> the versions its last load failed to start (none: the entry itself), and why
        self._failures: dict[str, tuple[tuple[str, ...], str]] = {}
        self._seen: dict[str, tuple[object, ...]] = {}  # model -> its folder's signature
        self._recipes: dict[tuple[str, str], tuple[object, ...]] = {}  # what a pool was made of

    def remember(self) -> None:
        """Note the repository as it is now (the models loaded at start are current)."""
        self._seen = {}
        for entry in repository.scan(self.root):
            self._seen[entry.name] = _signature(self.root / entry.name)
            with contextlib.suppress(ValueError):
                for deployment in entry_deployments(entry, self.settings):
                    if deployment.version in self.gateway.versions.get(entry.name, {}):
                        self._recipes[entry.name, deployment.version] = self._recipe(
                            deployment, entry.settings
                        )

    async def poll(self, interval: float) -> None:
        """Every ``interval`` s: reload what changed, load what is new, unload what is gone."""
        while True:
            await asyncio.sleep(interval)
            try:
                current = {
                    entry.name: _signature(self.root / entry.name)
                    for entry in repository.scan(self.root)
                }
            except (OSError, ValueError) as exc:
                log.warning("model repository: cannot scan %s: %s", self.root, exc)
                continue
            for name, signature in current.items():
                if self._seen.get(name) != signature:
                    self._seen[name] = signature
                    if self.budget is not None and name not in self.gateway.versions:
                        continue  # under a budget, a model loads when it is asked for
                    log.info("model repository: %s changed: loading it", name)
                    with contextlib.suppress(BadRequest, ModelNotFound, Overloaded):
                        await self.load(name, reason="poll")
            for name in set(self._seen) - set(current):
                del self._seen[name]
                if name in self.gateway.versions:
                    log.info("model repository: %s is gone: unloading it", name)
                    with contextlib.suppress(ModelNotFound):
                        await self.unload(name, reason="gone")

    def index(self) -> list[IndexEntry]:
        """Every model of the repository: its served versions' states, the versions whose last
        load failed (with the reason), or why it has none."""
        rows: list[IndexEntry] = []
        for entry in repository.scan(self.root):
            served = self.gateway.versions.get(entry.name, {})
            failed, reason = self._failures.get(entry.name, ((), ""))
            if entry.name in self._loading:
                rows.append(IndexEntry(entry.name, "", "LOADING"))
            for version, pool in sorted(served.items()):
                state = "READY" if pool.ready else "UNAVAILABLE"
                rows.append(
                    IndexEntry(entry.name, version, state, "" if pool.ready else "starting")
                )
            for version in failed:
                if version not in served:
                    rows.append(IndexEntry(entry.name, version, "UNAVAILABLE", reason))
            if not served and not failed and entry.name not in self._loading:
                rows.append(
                    IndexEntry(entry.name, "", "UNAVAILABLE", reason or entry.error or "unloaded")
                )
        return rows

    async def load(self, name: str, reason: str = "explicit") -> None:
        """(Re)load ``name`` from the repository: new versions warm first, then take traffic."""
        folder = self._folder(name)
        async with self._locks[name], self._budgeted():
            self._loading.add(name)
            try:
                entry = repository.read_entry(self.root.resolve(), folder)
                models = entry_deployments(entry, self.settings)
                if not models:
                    raise ValueError(f"model '{name}' has no version that can be served")
                running = self.gateway.versions.get(name, {})
                recipes = {m.version: self._recipe(m, entry.settings) for m in models}
                kept = {
                    m.version: running[m.version]
                    for m in models
                    if m.version in running
                    and self._recipes.get((name, m.version)) == recipes[m.version]
                }
                wanted = [m for m in models if m.version not in kept]
                if self.budget is not None and wanted:
                    await self._make_room(name)
                fresh = self._make_pools(wanted)
                try:
                    await start_pools(fresh, self.settings.instances or 1)
                except Exception as exc:
                    await asyncio.gather(*(p.close() for p in fresh), return_exceptions=True)
                    attempted = tuple(p.version for p in fresh)
                    why = f"model '{name}' failed to load: {exc}"
                    self._failures[name] = (attempted, why)
                    self.gateway.model_events[name, "load_failed", reason] += 1
                    log.warning("model %s: versions %s failed to load: %s", name, attempted, exc)
                    raise BadRequest(why) from exc
                made = {pool.version: pool for pool in fresh}
                pools = [kept.get(m.version) or made[m.version] for m in models]
                default = next(m.version for m in models if m.default)
                old = self.gateway.install(name, pools, default, entry.split)
                for key in [k for k in self._recipes if k[0] == name]:
                    del self._recipes[key]
                self._recipes.update({(name, v): recipe for v, recipe in recipes.items()})
            except ValueError as exc:
                self._failures[name] = ((), str(exc))
                self.gateway.model_events[name, "load_failed", reason] += 1
                log.warning("model %s: load failed: %s", name, exc)
                raise BadRequest(str(exc)) from None
            finally:
                self._loading.discard(name)
            self._failures.pop(name, None)
            self.gateway.model_events[name, "load", reason] += 1
            self._sizes[name] = max(self._sizes.get(name, 0), _size(pools))
            log.info(
                "model %s: loaded (%s) versions %s, default %s, %s kept running; %.0f MiB",
                name,
                reason,
                [p.version for p in pools],
                default,
                sorted(kept) or "none",
                self._sizes[name] / MiB,
            )
            if self.budget is not None:
                await self._fit_after_load(name)
        await _drain(old)

    async def unload(self, name: str, reason: str = "explicit") -> None:
        """Take ``name`` out at once (new requests get 404), then let what it holds finish."""
        async with self._locks[name]:
            old = self._take_out(name, reason)
            if old is None:
                raise ModelNotFound(f"model '{name}' is not loaded")
        await _drain(old)

    def _take_out(self, name: str, reason: str) -> list[InstancePool] | None:
        old = self.gateway.uninstall(name)
        if old is None:
            return None
        # Workers grow past their size at load (buffers for bigger batches): remember the most.
        self._sizes[name] = max(self._sizes.get(name, 0), _size(old))
        for key in [k for k in self._recipes if k[0] == name]:
            del self._recipes[key]
        self.gateway.model_events[name, "unload", reason] += 1
        log.info("model %s: unloaded (%s)", name, reason)
        return old

    # -- loading on demand under the memory budget ------------------------------------------

    def knows(self, model: str) -> bool:
        """Whether ``model`` is a repository model that a request may load (with a budget)."""
        return self.budget is not None and _is_name(model) and (self.root / model).is_dir()

    async def ensure(self, model: str, deadline: float | None) -> None:
        """Wait (up to ``deadline``) until ``model`` is loaded; one load serves every waiter."""
        task = self._demanded.get(model)
        if task is None:
            failed_at = self._failed_at.get(model)
            if failed_at is not None and time.monotonic() - failed_at < FAILED_PAUSE:
                _, why = self._failures.get(model, ((), "its last load failed"))
                raise Overloaded(
                    f"model '{model}' could not be loaded: {why}",
                    retry_after=max(1.0, FAILED_PAUSE - (time.monotonic() - failed_at)),
                )
            task = asyncio.ensure_future(self._load_on_demand(model))
            self._demanded[model] = task
            task.add_done_callback(functools.partial(self._demand_done, model))
        try:
            if deadline is None:
                await asyncio.shield(task)
            else:
                async with asyncio.timeout_at(deadline):
                    await asyncio.shield(task)
        except TimeoutError:
            raise DeadlineExceeded(
                f"the request's deadline passed while model '{model}' was loading"
            ) from None

    def _demand_done(self, model: str, task: asyncio.Task[None]) -> None:
        self._demanded.pop(model, None)
        if not task.cancelled():
            task.exception()  # seen: every waiter may have left at its deadline

    async def _load_on_demand(self, model: str) -> None:
        try:
            await self.load(model, reason="request")
        except (BadRequest, ModelNotFound) as exc:
            self._failed_at[model] = time.monotonic()
            raise Overloaded(str(exc), retry_after=FAILED_PAUSE) from None
        self._failed_at.pop(model, None)

    @contextlib.asynccontextmanager
    async def _budgeted(self) -> AsyncIterator[None]:
        """Under a budget, loads claim memory one at a time."""
        if self.budget is None:
            yield
            return
        async with self._room:
            yield

    def _residents(self, leaving_out: str) -> list[Resident]:
        return [
            Resident(
                name,
                _size(list(versions.values())),
                self.gateway.last_used.get(name, 0.0),
                busy=self.gateway.active.get(name, 0) > 0 or name in self._loading,
                pinned="" in versions,  # a --model model: not the repository's to unload
            )
            for name, versions in self.gateway.versions.items()
            if name != leaving_out
        ]

    def _estimate(self, name: str) -> int:
        """The bytes ``name`` will take: the most it was measured at, else the mean of the
        models measured so far (0 for the very first: it is measured once loaded)."""
        if name in self._sizes:
            return self._sizes[name]
        return sum(self._sizes.values()) // len(self._sizes) if self._sizes else 0

    async def _make_room(self, name: str) -> None:
        """Unload least recently used idle models until ``name`` fits (all its versions; a
        version reloaded beside a running one is over by that version until the old drains);
        wait for busy ones to go idle for up to ``ROOM_WAIT`` s, then give up (503)."""
        assert self.budget is not None
        need = self._estimate(name) - _size(list(self.gateway.versions.get(name, {}).values()))
        need = max(need, 0)
        waited_until = time.monotonic() + ROOM_WAIT
        while True:
            residents = self._residents(name)
            victims = to_evict(residents, need, self.budget)
            if victims is not None:
                break
            if need > self.budget - sum(r.size for r in residents if r.pinned):
                raise Overloaded(
                    f"model '{name}' needs about {need / MiB:.0f} MiB, more than the memory "
                    f"budget of {self.budget / MiB:.0f} MiB leaves",
                    retry_after=FAILED_PAUSE,
                )
            if time.monotonic() > waited_until:
                busy = ", ".join(sorted(r.name for r in residents if r.busy)) or "none"
                raise Overloaded(
                    f"no room to load model '{name}' within the memory budget: the loaded "
                    f"models are in use ({busy})",
                    retry_after=1.0,
                )
            await asyncio.sleep(0.02)
        await self._evict(victims, f"room for {name}")

    async def _fit_after_load(self, name: str) -> None:
        """If ``name`` turned out bigger than estimated, unload idle others to get back under
        the budget (memory stays within the budget plus one model meanwhile)."""
        assert self.budget is not None
        residents = self._residents(name)
        victims = to_evict(residents, self._sizes.get(name, 0), self.budget)
        if victims:
            await self._evict(victims, f"{name} is bigger than estimated")
        elif victims is None:
            log.warning(
                "memory budget: %.0f MiB in use after loading %s, over the budget of %.0f MiB "
                "until a model goes idle",
                (sum(r.size for r in residents) + self._sizes.get(name, 0)) / MiB,
                name,
                self.budget / MiB,
            )

    async def _evict(self, victims: list[str], why: str) -> None:
        """Unload ``victims`` (idle: nothing to wait for) and wait until their workers exit."""
        pools: list[InstancePool] = []
        for victim in victims:
            log.info(
                "model %s: evicted (least recently used, idle, %.0f MiB) to make %s",
                victim,
                _size(list(self.gateway.versions.get(victim, {}).values())) / MiB,
                why,
            )
            pools += self._take_out(victim, "evicted") or []
        await _drain(pools)

    def _folder(self, name: str) -> Path:
        if not _is_name(name):
            raise BadRequest(f"'{name}' is not a model name of the repository")
        folder = self.root / name
        if not folder.is_dir():
            raise ModelNotFound(f"model '{name}' is not in the repository {self.root}")
        return folder

    def _recipe(self, deployment: Deployment, settings: dict[str, object]) -> tuple[object, ...]:
        """What a version's pool is made of: when it changes, the version is reloaded."""
        folder = self.root / deployment.name / deployment.version
        return (deployment.reference, json.dumps(settings, sort_keys=True), _signature(folder))


def _is_name(name: str) -> bool:
    return bool(name) and not name.startswith(".") and "/" not in name and "\\" not in name


def _size(pools: list[InstancePool]) -> int:
    """Bytes the pools' workers hold, as they last reported."""
    return sum(pool.rss_bytes for pool in pools)


def _signature(folder: Path) -> tuple[object, ...]:
    """What a change of a model folder changes: every file's path, size and mtime."""
    try:
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        return tuple(
            (str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in files
        )
    except OSError:
        return ()


async def _drain(pools: list[InstancePool]) -> None:
    """Stop replaced or unloaded versions after what they hold is answered."""
    await asyncio.gather(*(pool.close() for pool in pools), return_exceptions=True)
