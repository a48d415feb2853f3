"""Versions in the data plane: a traffic split between versions, a shadow version that sees a
share of the requests without changing any answer, and install/uninstall at run time; through
``Gateway.infer`` over pools of fake instances (tests/fakes.py)."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from dlproxy.caching.base import MemoryCache
from dlproxy.caching.tiered import TieredCache
from dlproxy.errors import ModelNotFound
from dlproxy.gateway import Gateway, Limits
from dlproxy.metrics import RequestMetrics, registry_for, stats
from dlproxy.traffic import Split
from fakes import MODEL, FakeInstance, fake_pool, request


async def versioned(
    split: Split | None = None, shadow_factor: float = 2.0, cache: TieredCache | None = None
) -> tuple[Gateway, dict[str, list[FakeInstance]]]:
    """Versions 1 and 2 (x * 2) and 3 (x * ``shadow_factor``), 1 the default."""
    pools, made = [], {}
    for version, factor in (("1", 2.0), ("2", 2.0), ("3", shadow_factor)):
        pool, instances = await fake_pool(count=1, version=version, factor=factor)
        pools.append(pool)
        made[version] = instances
    gateway = Gateway(
        pools,
        Limits(),
        cache,
        coalesce=False,
        defaults={MODEL: "1"},
        splits={MODEL: split} if split is not None else None,
    )
    gateway.started = True
    return gateway, made


async def shadows_done(gateway: Gateway, count: int) -> None:
    """Wait (a bounded while) until the shadow has dealt with ``count`` copies."""
    for _ in range(200):
        done = sum(s.requests + s.errors + s.dropped for s in gateway.shadows.values())
        if done >= count:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"the shadow dealt with {done} of {count} copies")


async def test_a_split_shares_the_plain_route_and_a_named_version_is_always_that_one() -> None:
    gateway, made = await versioned(Split({"1": 80, "2": 20}))
    answered = Counter([(await gateway.infer(request(i))).model_version for i in range(300)])
    assert set(answered) == {"1", "2"} and 30 <= answered["2"] <= 90  # 20% of 300, loosely
    assert sum(made["1"][0].batches) + sum(made["2"][0].batches) == 300
    assert made["3"][0].batches == []  # no weight: only its own route reaches it
    pinned = request(7)
    pinned.version = "3"
    assert (await gateway.infer(pinned)).model_version == "3"
    await gateway.close()


async def test_a_session_stays_on_one_version_of_a_split() -> None:
    gateway, _ = await versioned(Split({"1": 50, "2": 50}))
    for session in ("alice", "bob", "carol"):
        answers = set()
        for i in range(20):
            sticky = request(i)
            sticky.session_key = session
            answers.add((await gateway.infer(sticky)).model_version)
        assert len(answers) == 1
    await gateway.close()


async def test_the_shadow_gets_its_share_the_client_the_primary_answer() -> None:
    # Version 3 answers -x*2: the opposite direction, so cosine -1 shows it was compared.
    gateway, made = await versioned(Split({"1": 1}, "3", 1.0), shadow_factor=-2.0)
    for i in range(1, 11):
        response = await gateway.infer(request(i))
        assert response.model_version == "1"
        assert response.outputs["embedding"][0, 0] == 2.0 * i  # the primary's, never the shadow's
    await shadows_done(gateway, 10)
    shadow = gateway.shadows[MODEL, "3"]
    assert shadow.requests == 10 and shadow.errors == 0 and sum(made["3"][0].batches) == 10
    assert shadow.similarity_min == pytest.approx(-1.0)
    assert shadow.latency.count == 10
    await gateway.close()


async def test_an_identical_shadow_scores_one_and_a_partial_share_mirrors_some() -> None:
    gateway, made = await versioned(Split({"1": 1}, "3", 0.3))
    for i in range(300):
        await gateway.infer(request(i))
    mirrored = sum(made["3"][0].batches)
    await shadows_done(gateway, mirrored)
    assert 50 <= mirrored <= 130  # 30% of 300, loosely
    assert gateway.shadows[MODEL, "3"].similarity_min == pytest.approx(1.0)
    await gateway.close()


async def test_a_failing_or_full_shadow_is_counted_and_never_reaches_the_client() -> None:
    gateway, made = await versioned(Split({"1": 1}, "3", 1.0))
    made["3"][0].failing = True
    for i in range(5):
        assert (await gateway.infer(request(i))).model_version == "1"
    await shadows_done(gateway, 5)
    assert gateway.shadows[MODEL, "3"].errors == 5
    made["3"][0].state = "unhealthy"  # no ready instance: copies are dropped, not queued
    await gateway.infer(request(9))
    await shadows_done(gateway, 6)
    assert gateway.shadows[MODEL, "3"].dropped == 1
    await gateway.close()


async def test_the_shadow_never_reads_the_cache_and_versions_never_share_entries() -> None:
    cache = TieredCache(MemoryCache("lru", 100))
    gateway, made = await versioned(Split({"1": 1}, "3", 1.0), cache=cache)
    await gateway.infer(request(4))
    await gateway.infer(request(4))  # a hit for version 1; the shadow still computes its copy
    await shadows_done(gateway, 2)
    assert made["1"][0].batches == [1] and made["3"][0].batches == [1, 1]
    pinned = request(4)
    pinned.version = "2"
    assert (await gateway.infer(pinned)).cache == "miss"  # version 1's entry is not version 2's
    await gateway.close()


async def test_metrics_and_stats_are_labelled_by_version_and_show_the_shadow() -> None:
    gateway, _ = await versioned(Split({"1": 3, "2": 1}, "3", 1.0))
    requests = RequestMetrics()
    for i in range(8):
        response = await gateway.infer(request(i))
        requests.record(MODEL, response.model_version, "kserve", 200, 0.01)
    await shadows_done(gateway, 8)
    families = {f.name: f for f in registry_for(gateway, requests).collect()}
    ready = {
        s.labels["version"]: s.value
        for s in families["dlproxy_instances"].samples
        if s.labels["state"] == "ready"
    }
    assert ready == {"1": 1, "2": 1, "3": 1}
    weights = {s.labels["version"]: s.value for s in families["dlproxy_traffic_weight"].samples}
    assert weights == {"1": 0.75, "2": 0.25}
    compared = [
        s.value
        for s in families["dlproxy_shadow_requests"].samples
        if s.labels == {"model": MODEL, "version": "3", "result": "compared"}
    ]
    assert compared == [8]
    figures = stats(gateway, requests)
    versions = figures["models"][MODEL]["versions"]
    assert sum(versions[v]["requests"] for v in ("1", "2")) == 8 and versions["3"]["requests"] == 0
    assert figures["models"][MODEL]["traffic"] == {"1": 0.75, "2": 0.25}
    assert figures["shadow"][f"{MODEL}/3"]["compared"] == 8
    assert figures["shadow"][f"{MODEL}/3"]["similarity_min"] == pytest.approx(1.0)
    await gateway.close()


async def test_install_replaces_only_the_pools_not_kept_and_uninstall_is_immediate() -> None:
    gateway, _ = await versioned()
    one, two, three = (gateway.versions[MODEL][v] for v in ("1", "2", "3"))
    newer, _ = await fake_pool(count=1, version="4")
    replaced = gateway.install(MODEL, [two, newer], "4", Split({"2": 1, "4": 1}))
    assert replaced == [one, three] and gateway.pools[MODEL] is newer
    assert MODEL in gateway.splits
    assert (await gateway.infer(request(1))).model_version in {"2", "4"}
    gone = gateway.uninstall(MODEL)
    assert gone == [two, newer] and MODEL not in gateway.splits
    with pytest.raises(ModelNotFound, match="not served here"):
        await gateway.infer(request(1))
    for pool in (one, two, three, newer):
        await pool.close()


async def test_a_model_whose_config_turns_the_cache_off_is_always_computed() -> None:
    gateway, made = await versioned(cache=TieredCache(MemoryCache("lru", 100)))
    gateway.versions[MODEL]["1"].cached = False
    for _ in range(2):
        assert (await gateway.infer(request(4))).cache == "miss"
    assert made["1"][0].batches == [1, 1]
    await gateway.close()


async def test_a_model_served_twice_is_refused_not_shadowed() -> None:
    from dlproxy.assembly import deployments
    from dlproxy.settings import Settings

    with pytest.raises(ValueError, match="'echo' would be served twice"):
        deployments(Settings(models=["echo", "echo"]))
    first, _ = await fake_pool(count=1)
    second, _ = await fake_pool(count=1)
    with pytest.raises(ValueError, match="served twice"):
        Gateway([first, second], Limits())
    await first.close()
    await second.close()
