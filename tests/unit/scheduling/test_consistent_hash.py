"""Consistent hashing with bounded loads: sticky keys, minimal movement, and a hard load cap."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dlproxy.scheduling.consistent_hash import ConsistentHash
from dlproxy.types import InferenceRequest, InstanceView

C = 1.25
KEYS = [f"session-{n}" for n in range(10_000)]


def request(key: str) -> InferenceRequest:
    return InferenceRequest(
        model="m", inputs={"x": np.array([b"a"], dtype=object)}, session_key=key
    )


def views(*ids: str) -> list[InstanceView]:
    return [InstanceView(id=i) for i in ids]


def assign(policy: ConsistentHash, instances: list[InstanceView]) -> dict[str, str]:
    return {key: policy.choose(request(key), instances) for key in KEYS}


def capacity(total: int, n: int) -> int:
    return math.ceil(C * (total + 1) / n)


def test_same_key_same_instance() -> None:
    policy = ConsistentHash()
    instances = views("a", "b", "c", "d")
    first = assign(policy, instances)
    assert assign(policy, instances) == first
    # A fresh policy (another gateway process) and another list order agree.
    assert assign(ConsistentHash(), views("d", "c", "b", "a")) == first


def test_keys_without_a_session_route_on_the_input_digest() -> None:
    policy = ConsistentHash()
    instances = views("a", "b", "c", "d")
    chosen = set()
    for text in (b"x", b"y", b"z", b"w", b"v", b"u", b"t", b"s"):
        inputs = {"x": np.array([text], dtype=object)}
        first = policy.choose(InferenceRequest(model="m", inputs=inputs), instances)
        again = {"x": np.array([text], dtype=object)}
        assert policy.choose(InferenceRequest(model="m", inputs=again), instances) == first
        chosen.add(first)
    assert len(chosen) > 1


def test_keys_spread_evenly_with_virtual_nodes() -> None:
    counts = Counter(assign(ConsistentHash(), views("a", "b", "c", "d")).values())
    assert all(abs(n - 2500) < 500 for n in counts.values()), counts


def test_adding_a_fifth_instance_moves_about_a_fifth_of_the_keys_all_to_it() -> None:
    policy = ConsistentHash()
    before = assign(policy, views("a", "b", "c", "d"))
    after = assign(policy, views("a", "b", "c", "d", "e"))
    moved = [key for key in KEYS if after[key] != before[key]]
    assert 0.12 < len(moved) / len(KEYS) < 0.28
    assert {after[key] for key in moved} == {"e"}


def test_removing_an_instance_moves_only_its_keys() -> None:
    policy = ConsistentHash()
    before = assign(policy, views("a", "b", "c", "d"))
    after = assign(policy, views("a", "b", "d"))
    assert all(after[key] == before[key] for key in KEYS if before[key] != "c")


def test_an_unhealthy_instance_spills_its_keys_and_gets_them_back() -> None:
    policy = ConsistentHash()
    up = views("a", "b", "c", "d")
    before = assign(policy, up)
    down = [*views("a", "b", "d"), InstanceView(id="c", healthy=False)]
    during = assign(policy, down)
    assert all(during[key] == before[key] for key in KEYS if before[key] != "c")
    assert "c" not in set(during.values())
    assert assign(policy, up) == before


def test_simulated_inflight_never_exceeds_the_bound() -> None:
    policy = ConsistentHash()
    ids = ["a", "b", "c", "d", "e"]
    loads = dict.fromkeys(ids, 0)
    # A skewed workload: a few hot keys take most requests; they all stay in flight.
    hot = [f"hot-{n}" for n in range(3)]
    for n in range(2000):
        key = hot[n % 3] if n % 4 else f"cold-{n}"
        total = sum(loads.values())
        instances = [InstanceView(id=i, inflight=loads[i]) for i in ids]
        chosen = policy.choose(request(key), instances)
        assert loads[chosen] < capacity(total, len(ids))
        loads[chosen] += 1
        assert max(loads.values()) <= math.ceil(C * sum(loads.values()) / len(ids))
    # Without the bound the three hot keys would pile 1500 requests onto at most three instances.
    assert max(loads.values()) <= math.ceil(C * 2000 / 5)
    assert min(loads.values()) > 0


def test_the_key_stays_home_while_its_instance_is_under_the_bound() -> None:
    policy = ConsistentHash()
    idle = views("a", "b", "c", "d")
    home = policy.choose(request("k"), idle)
    # Total 13, capacity ceil(1.25 * 14 / 4) = 5: home at 4 keeps the key; at 9 of 9 it spills.
    loaded = [InstanceView(id=i, inflight=4 if i == home else 3) for i in "abcd"]
    assert policy.choose(request("k"), loaded) == home
    full = [InstanceView(id=i, inflight=9 if i == home else 0) for i in "abcd"]
    assert policy.choose(request("k"), full) != home


@given(
    loads=st.lists(
        st.tuples(st.integers(0, 50), st.integers(0, 50), st.booleans()), min_size=1, max_size=12
    ),
    key=st.text(min_size=1, max_size=20),
)
def test_property_chosen_instance_is_healthy_and_below_capacity(
    loads: list[tuple[int, int, bool]], key: str
) -> None:
    instances = [
        InstanceView(id=f"i{n}", inflight=f, queue_depth=q, healthy=ok)
        for n, (f, q, ok) in enumerate(loads)
    ]
    up = [view for view in instances if view.healthy]
    if not up:
        return  # the contract suite covers NoHealthyInstance
    total = sum(view.inflight + view.queue_depth for view in up)
    chosen = ConsistentHash().choose(request(key), instances)
    view = next(view for view in instances if view.id == chosen)
    assert view.healthy
    assert view.inflight + view.queue_depth < capacity(total, len(up))


@given(
    n=st.integers(1, 8),
    keys=st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=200),
)
def test_property_inflight_stays_within_the_bound(n: int, keys: list[str]) -> None:
    policy = ConsistentHash()
    loads = dict.fromkeys((f"i{m}" for m in range(n)), 0)
    for key in keys:
        instances = [InstanceView(id=i, inflight=load) for i, load in loads.items()]
        loads[policy.choose(request(key), instances)] += 1
        assert max(loads.values()) <= math.ceil(C * sum(loads.values()) / n)


@pytest.mark.parametrize(("virtual_nodes", "load_factor"), [(0, 1.25), (160, 0.9)])
def test_bad_parameters_are_refused(virtual_nodes: int, load_factor: float) -> None:
    with pytest.raises(ValueError, match="must be at least"):
        ConsistentHash(virtual_nodes=virtual_nodes, load_factor=load_factor)
