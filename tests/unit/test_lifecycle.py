"""Models loaded on demand under a memory budget (lifecycle.ModelControl with the gateway), in
process: the real control, gateway, pools and batchers over fake instances (tests/fakes.py)
whose workers "hold" the bytes each test gives them; also load/unload ordering and reloads."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from dlproxy import lifecycle
from dlproxy.assembly import Deployment
from dlproxy.errors import BadRequest, DeadlineExceeded, ModelNotFound, Overloaded
from dlproxy.eviction import Resident, to_evict
from dlproxy.gateway import Gateway, Limits
from dlproxy.instances.pool import InstancePool
from dlproxy.lifecycle import ModelControl
from dlproxy.settings import Settings
from dlproxy.types import InferenceRequest
from fakes import FakeInstance, unstarted_pool

MB = 1_000_000


class Workers:
    """Makes the pools the control asks for: fakes holding ``sizes[name]`` bytes each."""

    def __init__(self, sizes: dict[str, int]) -> None:
        self.sizes = sizes
        self.made: Counter[str] = Counter()  # pools made per model
        self.instances: dict[str, list[FakeInstance]] = {}
        self.delay: dict[str, float] = {}  # per model: s per batch
        self.start_delay = 0.0
        self.broken: set[str] = set()

    def __call__(self, deployments: list[Deployment]) -> list[InstancePool]:
        pools = []
        for deployment in deployments:
            pool, made = unstarted_pool(
                deployment.name, deployment.version, delay=self.delay.get(deployment.name, 0.0)
            )
            self.made[deployment.name] += 1
            self.instances[deployment.name] = made
            factory = pool._factory  # type: ignore[attr-defined]

            def sized(on_failure, factory=factory, name=deployment.name):  # type: ignore[no-untyped-def]
                instance = factory(on_failure)
                instance.load.rss_bytes = self.sizes.get(name, 0)
                instance.start_delay = self.start_delay
                if name in self.broken:
                    instance.start_error = RuntimeError(f"{name}: load() raised ValueError")
                return instance

            pool._factory = sized  # type: ignore[attr-defined]
            pools.append(pool)
        return pools


def repository(root: Path, *names: str) -> Path:
    for name in names:
        folder = root / name / "1"
        folder.mkdir(parents=True)
        (folder / "model.json").write_text(json.dumps({"model": "echo"}))
    return root


def control(
    root: Path, workers: Workers, budget: int | None = 250 * MB
) -> tuple[ModelControl, Gateway]:
    settings = Settings(
        model_repository=root, memory_budget=budget, models=[], instances=1, threads=1
    )
    gateway = Gateway([], Limits(), coalesce=False)
    gateway.started = True
    models = ModelControl(settings, None, gateway, make_pools=workers)  # type: ignore[arg-type]
    if budget is not None:
        gateway.on_demand = models
        gateway.memory_budget = budget
    return models, gateway


def ask(model: str, value: float = 1.0, deadline: float | None = None) -> InferenceRequest:
    return InferenceRequest(model, {"x": np.full((1, 4), value, np.float32)}, deadline=deadline)


def loaded(gateway: Gateway) -> set[str]:
    return set(gateway.versions)


def memory(gateway: Gateway) -> int:
    return sum(i.load.rss_bytes for pool in gateway.all_pools() for i in pool.instances)


async def test_a_model_loads_on_its_first_request_and_the_wait_is_counted(tmp_path: Path) -> None:
    workers = Workers({"a": 100 * MB})
    _models, gateway = control(repository(tmp_path, "a"), workers)
    assert loaded(gateway) == set()
    response = await gateway.infer(ask("a", 3.0))
    assert response.outputs["embedding"][0, 0] == 6.0 and response.model_version == "1"
    assert loaded(gateway) == {"a"} and gateway.load_waits["a"].count == 1
    await gateway.infer(ask("a"))  # loaded now: no wait
    assert gateway.load_waits["a"].count == 1 and workers.made["a"] == 1
    assert gateway.model_events["a", "load", "request"] == 1
    with pytest.raises(ModelNotFound):  # not in the repository: no load is tried
        await gateway.infer(ask("nope"))
    await gateway.close()


async def test_the_least_recently_used_idle_model_makes_room(tmp_path: Path) -> None:
    workers = Workers({"a": 100 * MB, "b": 100 * MB, "c": 100 * MB})
    _models, gateway = control(repository(tmp_path, "a", "b", "c"), workers)
    for name in ("a", "b", "a"):  # b is now the least recently used
        await gateway.infer(ask(name))
    await gateway.infer(ask("c"))
    assert loaded(gateway) == {"a", "c"} and memory(gateway) <= 250 * MB
    assert gateway.model_events["b", "unload", "evicted"] == 1
    assert [i.state for i in workers.instances["b"]] == ["stopped"]  # its worker is gone
    await gateway.infer(ask("b"))  # back on demand, evicting a (c is newer)
    assert loaded(gateway) == {"b", "c"} and workers.made["b"] == 2
    await gateway.close()


async def test_a_model_with_a_request_in_flight_is_never_evicted(tmp_path: Path) -> None:
    workers = Workers({"a": 100 * MB, "b": 100 * MB, "c": 100 * MB})
    workers.delay["a"] = 0.3
    _models, gateway = control(repository(tmp_path, "a", "b", "c"), workers)
    await gateway.infer(ask("a"))
    await gateway.infer(ask("b"))
    slow = asyncio.ensure_future(gateway.infer(ask("a", 5.0)))  # a is the LRU, but busy
    await asyncio.sleep(0.05)
    await gateway.infer(ask("c"))
    assert loaded(gateway) == {"a", "c"}
    assert (await slow).outputs["embedding"][0, 0] == 10.0  # answered by the model it asked
    await gateway.close()


async def test_when_every_model_stays_busy_the_load_gives_up_with_503(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lifecycle, "ROOM_WAIT", 0.2)
    workers = Workers({"a": 100 * MB, "b": 100 * MB})
    workers.delay["a"] = 1.0
    _models, gateway = control(repository(tmp_path, "a", "b"), workers, budget=150 * MB)
    await gateway.infer(ask("a"))  # measured now: b is estimated at a's size
    slow = asyncio.ensure_future(gateway.infer(ask("a")))
    await asyncio.sleep(0.05)
    with pytest.raises(Overloaded, match=r"no room to load model 'b'.*in use \(a\)") as refused:
        await gateway.infer(ask("b"))
    assert refused.value.retry_after is not None
    assert (await slow).model_version == "1" and loaded(gateway) == {"a"}
    await gateway.close()


async def test_a_model_bigger_than_the_budget_is_refused_once_measured(tmp_path: Path) -> None:
    workers = Workers({"a": 400 * MB})
    models, gateway = control(repository(tmp_path, "a"), workers)
    await gateway.infer(ask("a"))  # unknown size: loaded, measured, over by at most itself
    assert memory(gateway) == 400 * MB
    await models.unload("a")
    with pytest.raises(Overloaded, match="needs about 381 MiB, more than the memory budget"):
        await gateway.infer(ask("a"))
    await gateway.close()


async def test_a_failing_load_answers_503_and_is_not_retried_at_once(tmp_path: Path) -> None:
    workers = Workers({})
    workers.broken.add("a")
    models, gateway = control(repository(tmp_path, "a"), workers)
    with pytest.raises(Overloaded, match=r"failed to load.*load\(\) raised ValueError"):
        await gateway.infer(ask("a"))
    with pytest.raises(Overloaded, match="could not be loaded") as again:
        await gateway.infer(ask("a"))
    assert workers.made["a"] == 1 and again.value.retry_after is not None
    assert gateway.model_events["a", "load_failed", "request"] == 1
    (row,) = [r for r in models.index() if r.name == "a"]
    assert row.state == "UNAVAILABLE" and "load() raised ValueError" in row.reason
    await gateway.close()


async def test_concurrent_first_requests_share_one_load(tmp_path: Path) -> None:
    workers = Workers({"a": 10 * MB})
    workers.start_delay = 0.1
    _models, gateway = control(repository(tmp_path, "a"), workers)
    answers = await asyncio.gather(*(gateway.infer(ask("a", i)) for i in range(8)))
    assert [a.outputs["embedding"][0, 0] for a in answers] == [2.0 * i for i in range(8)]
    assert workers.made["a"] == 1 and gateway.load_waits["a"].count == 8
    await gateway.close()


async def test_a_deadline_that_passes_during_the_load_is_a_504_and_the_load_goes_on(
    tmp_path: Path,
) -> None:
    workers = Workers({"a": 10 * MB})
    workers.start_delay = 0.3
    _models, gateway = control(repository(tmp_path, "a"), workers)
    loop = asyncio.get_running_loop()
    with pytest.raises(DeadlineExceeded, match="while model 'a' was loading"):
        await gateway.infer(ask("a", deadline=loop.time() + 0.05))
    assert (await gateway.infer(ask("a"))).model_version == "1"  # the same load finished
    assert workers.made["a"] == 1
    await gateway.close()


async def test_a_load_racing_an_unload_ends_as_the_later_call_says(tmp_path: Path) -> None:
    workers = Workers({})
    workers.start_delay = 0.1
    models, gateway = control(repository(tmp_path, "a"), workers, budget=None)
    load = asyncio.ensure_future(models.load("a"))
    await asyncio.sleep(0.02)  # the load is starting a's instances
    unload = asyncio.ensure_future(models.unload("a"))
    await asyncio.gather(load, unload)
    assert loaded(gateway) == set()  # the unload came later: it wins, once the load is done
    assert [i.state for i in workers.instances["a"]] == ["stopped"]
    await models.load("a")
    unload = asyncio.ensure_future(models.unload("a"))
    await asyncio.sleep(0)
    load = asyncio.ensure_future(models.load("a"))
    await asyncio.gather(unload, load)
    assert loaded(gateway) == {"a"}  # now the load came later
    await gateway.close()


async def test_a_reload_keeps_unchanged_versions_running_and_applies_a_new_split(
    tmp_path: Path,
) -> None:
    root = repository(tmp_path, "m")
    (root / "m" / "2").mkdir()
    (root / "m" / "2" / "model.json").write_text(json.dumps({"model": "echo"}))
    config = root / "m" / "config.json"
    config.write_text(json.dumps({"version_policy": {"all": True}}))
    workers = Workers({})
    models, gateway = control(root, workers, budget=None)
    await models.load("m")
    first = dict(gateway.versions["m"])
    assert "m" not in gateway.splits and workers.made["m"] == 2
    config.write_text(json.dumps({"version_policy": {"all": True}, "traffic": {"1": 9, "2": 1}}))
    await models.load("m")
    assert all(gateway.versions["m"][v] is first[v] for v in ("1", "2"))  # nothing restarted
    assert gateway.splits["m"].weights == {"1": 9.0, "2": 1.0} and workers.made["m"] == 2
    (root / "m" / "2" / "model.json").write_text(json.dumps({"model": "echo", "x": 1}))
    await models.load("m")  # version 2's files changed: only it restarts
    assert gateway.versions["m"]["1"] is first["1"] and gateway.versions["m"]["2"] is not first["2"]
    assert first["2"].instances == [] or all(i.state == "stopped" for i in first["2"].instances)
    await gateway.close()


async def test_a_version_that_fails_to_start_leaves_the_previous_one_serving(
    tmp_path: Path,
) -> None:
    root = repository(tmp_path, "m")
    workers = Workers({})
    models, gateway = control(root, workers, budget=None)
    await models.load("m")
    before = gateway.versions["m"]["1"]
    (root / "m" / "2").mkdir()
    (root / "m" / "2" / "model.json").write_text(json.dumps({"model": "echo"}))
    workers.broken.add("m")
    with pytest.raises(BadRequest, match=r"failed to load: m: load\(\) raised"):
        await models.load("m")
    assert gateway.versions["m"] == {"1": before}
    rows = {(r.version, r.state) for r in models.index()}
    assert rows == {("1", "READY"), ("2", "UNAVAILABLE")}
    await gateway.close()


def test_eviction_picks_the_least_recently_used_idle_models_until_the_need_fits() -> None:
    residents = [
        Resident("old", 100, last_used=1.0, busy=False),
        Resident("busy", 100, last_used=0.5, busy=True),
        Resident("pinned", 100, last_used=0.1, busy=False, pinned=True),
        Resident("newer", 100, last_used=2.0, busy=False),
    ]
    assert to_evict(residents, 100, 500) == []
    assert to_evict(residents, 100, 400) == ["old"]
    assert to_evict(residents, 200, 400) == ["old", "newer"]
    assert to_evict(residents, 300, 400) is None  # busy and pinned hold 200 of the 400
