"""The suite every registered scheduling policy must pass, whatever its strategy."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from dlproxy.plugins import import_from_string
from dlproxy.scheduling.base import POLICIES, NoHealthyInstance, SchedulingPolicy, create_policy
from dlproxy.types import InferenceRequest, InstanceView


def request(key: str) -> InferenceRequest:
    return InferenceRequest(
        model="m", inputs={"x": np.array([b"a"], dtype=object)}, session_key=key
    )


def views(*ids: str, unhealthy: tuple[str, ...] = ()) -> list[InstanceView]:
    return [InstanceView(id=i, healthy=i not in unhealthy) for i in ids]


@pytest.fixture(params=sorted(POLICIES))
def policy(request: pytest.FixtureRequest) -> SchedulingPolicy:
    return create_policy(request.param)


def test_returns_an_id_from_the_list(policy: SchedulingPolicy) -> None:
    instances = views("a", "b", "c")
    for n in range(50):
        assert policy.choose(request(f"k{n}"), instances) in {"a", "b", "c"}


def test_never_returns_an_unhealthy_instance(policy: SchedulingPolicy) -> None:
    instances = views("a", "b", "c", "d", "e", unhealthy=("b", "d"))
    chosen = {policy.choose(request(f"k{n}"), instances) for n in range(500)}
    assert chosen <= {"a", "c", "e"}


def test_unhealthy_instance_with_less_load_is_still_skipped(policy: SchedulingPolicy) -> None:
    instances = [
        InstanceView(id="down", healthy=False),
        InstanceView(id="busy", inflight=50, queue_depth=50, latency_ewma=1.0),
        InstanceView(id="busier", inflight=90, queue_depth=90, latency_ewma=1.0),
    ]
    for n in range(200):
        assert policy.choose(request(f"k{n}"), instances) != "down"


@pytest.mark.parametrize("instances", [[], views("a", "b", unhealthy=("a", "b"))])
def test_raises_when_no_instance_is_healthy(
    policy: SchedulingPolicy, instances: list[InstanceView]
) -> None:
    with pytest.raises(NoHealthyInstance):
        policy.choose(request("k"), instances)


def test_single_instance_is_always_chosen(policy: SchedulingPolicy) -> None:
    instances = [InstanceView(id="only", inflight=7, queue_depth=3, latency_ewma=0.5)]
    for n in range(100):
        assert policy.choose(request(f"k{n}"), instances) == "only"


def test_copes_with_instances_joining_and_leaving(policy: SchedulingPolicy) -> None:
    timeline = [
        views("a", "b"),
        views("a", "b", "c"),  # c joins
        views("b", "c"),  # a leaves
        views("c", "d", "e", unhealthy=("c",)),  # b leaves, d and e join, c goes down
        views("a"),  # a comes back alone
        views("a", "b", "c", "d", "e"),
        [],
        views("e", "d"),  # order changed
    ]
    n = 0
    for instances in timeline:
        up = {view.id for view in instances if view.healthy}
        for _ in range(60):
            n += 1
            if not up:
                with pytest.raises(NoHealthyInstance):
                    policy.choose(request(f"k{n}"), instances)
            else:
                assert policy.choose(request(f"k{n}"), instances) in up


def test_every_healthy_instance_gets_traffic_at_equal_load(policy: SchedulingPolicy) -> None:
    instances = views("a", "b", "c", "d", "e", unhealthy=("c",))
    # Varied keys, so that consistent hashing spreads too.
    counts = Counter(policy.choose(request(f"key-{n}"), instances) for n in range(400))
    assert set(counts) == {"a", "b", "d", "e"}


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_create_policy_builds_the_registered_class(name: str) -> None:
    policy = create_policy(name)
    assert type(policy) is import_from_string(POLICIES[name])
    assert policy.choose(request("k"), views("a")) == "a"


def test_create_policy_rejects_an_unknown_name_listing_the_known_ones() -> None:
    with pytest.raises(ValueError, match="nope") as info:
        create_policy("nope")
    for name in POLICIES:
        assert name in str(info.value)
