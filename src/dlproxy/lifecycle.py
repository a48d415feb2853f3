"""Models of the repository loaded, reloaded and unloaded at run time, without dropping a request.

The KServe v2 repository extension (``POST /v2/repository/index``, ``.../models/{m}/load``,
``.../unload``) calls ``ModelControl``. A load reads the model's folder again, starts and warms
the instances of every version its policy serves, and only then switches the gateway to them;
the versions it replaced are drained (what they hold is answered) and stopped. An unload takes
the model out of the gateway at once (new requests get 404) and drains it. Calls on one model are
serialised by a lock, so a load racing an unload ends as the later call says. A version that
fails to start leaves the previous ones serving and is reported, with its reason, in the index.
With ``--repository-poll-s`` the repository is also scanned that often: a model whose folder
changed (a version added or removed, a file or its config edited) is reloaded, a new one loaded,
and one whose folder is gone unloaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import zmq.asyncio

from dlproxy.assembly import build_pools, entry_deployments, start_pools
from dlproxy.errors import BadRequest, ModelNotFound
from dlproxy.gateway import Gateway
from dlproxy.instances.pool import InstancePool
from dlproxy.models import repository
from dlproxy.settings import Settings

log = logging.getLogger("dlproxy.lifecycle")


@dataclass(frozen=True)
class IndexEntry:
    """One row of the repository index: a model version and its state (Triton's words)."""

    name: str
    version: str
    state: str  # READY | LOADING | UNAVAILABLE
    reason: str = ""


class ModelControl:
    """Load and unload the models of ``settings.model_repository`` in ``gateway``."""

    def __init__(self, settings: Settings, context: zmq.asyncio.Context, gateway: Gateway) -> None:
        assert settings.model_repository is not None
        self.root = Path(settings.model_repository)
        self.settings = settings
        self.context = context
        self.gateway = gateway
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._loading: set[str] = set()
        self._failures: dict[str, str] = {}  # model -> why its last load failed
        self._seen: dict[str, tuple[object, ...]] = {}  # model -> its folder's signature

    def remember(self) -> None:
        """Note the repository as it is now (the models loaded at start are current)."""
        self._seen = {
            entry.name: _signature(self.root / entry.name) for entry in repository.scan(self.root)
        }

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
                    log.info("model repository: %s changed: loading it", name)
                    with contextlib.suppress(BadRequest, ModelNotFound):
                        await self.load(name)
            for name in set(self._seen) - set(current):
                del self._seen[name]
                if name in self.gateway.versions:
                    log.info("model repository: %s is gone: unloading it", name)
                    with contextlib.suppress(ModelNotFound):
                        await self.unload(name)

    def index(self) -> list[IndexEntry]:
        """Every model of the repository: its served versions' states, or why it has none."""
        rows: list[IndexEntry] = []
        for entry in repository.scan(self.root):
            served = self.gateway.versions.get(entry.name, {})
            if entry.name in self._loading:
                rows.append(IndexEntry(entry.name, "", "LOADING"))
            for version, pool in sorted(served.items()):
                state = "READY" if pool.ready else "UNAVAILABLE"
                rows.append(
                    IndexEntry(entry.name, version, state, "" if pool.ready else "starting")
                )
            if not served and entry.name not in self._loading:
                reason = self._failures.get(entry.name) or entry.error or "unloaded"
                rows.append(IndexEntry(entry.name, "", "UNAVAILABLE", reason))
        return rows

    async def load(self, name: str) -> None:
        """(Re)load ``name`` from the repository: new versions warm first, then take traffic."""
        folder = self._folder(name)
        async with self._locks[name]:
            self._loading.add(name)
            try:
                entry = repository.read_entry(self.root.resolve(), folder)
                models = entry_deployments(entry, self.settings)
                if not models:
                    raise BadRequest(f"model '{name}' has no version that can be served")
                pools = build_pools(self.settings, self.context, models)
                try:
                    await start_pools(pools, self.settings.instances or 1)
                except Exception as exc:
                    await asyncio.gather(*(p.close() for p in pools), return_exceptions=True)
                    raise BadRequest(f"model '{name}' failed to load: {exc}") from exc
                default = next(m.version for m in models if m.default)
                old = self.gateway.install(name, pools, default)
            except (ValueError, BadRequest) as exc:
                self._failures[name] = str(exc)
                log.warning("model %s: load failed: %s", name, exc)
                raise BadRequest(str(exc)) from None
            finally:
                self._loading.discard(name)
            self._failures.pop(name, None)
            log.info(
                "model %s: loaded versions %s (default %s)",
                name,
                [p.version for p in pools],
                default,
            )
        await _drain(old)

    async def unload(self, name: str) -> None:
        """Take ``name`` out at once (new requests get 404), then let what it holds finish."""
        async with self._locks[name]:
            old = self.gateway.uninstall(name)
            if old is None:
                raise ModelNotFound(f"model '{name}' is not loaded")
            log.info("model %s: unloaded", name)
        await _drain(old)

    def _folder(self, name: str) -> Path:
        if not name or name.startswith(".") or "/" in name or "\\" in name:
            raise BadRequest(f"'{name}' is not a model name of the repository")
        folder = self.root / name
        if not folder.is_dir():
            raise ModelNotFound(f"model '{name}' is not in the repository {self.root}")
        return folder


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
