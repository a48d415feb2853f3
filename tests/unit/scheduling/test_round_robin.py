"""Round robin: an exact rotation over the healthy instances."""

from __future__ import annotations

import numpy as np

from dlproxy.scheduling.round_robin import RoundRobin
from dlproxy.types import InferenceRequest, InstanceView

REQUEST = InferenceRequest(model="m", inputs={"x": np.array([b"a"], dtype=object)})


def views(*ids: str, unhealthy: tuple[str, ...] = ()) -> list[InstanceView]:
    return [InstanceView(id=i, healthy=i not in unhealthy) for i in ids]


def test_exact_rotation_in_list_order() -> None:
    policy = RoundRobin()
    instances = views("a", "b", "c")
    assert [policy.choose(REQUEST, instances) for _ in range(9)] == list("abcabcabc")


def test_rotation_ignores_load() -> None:
    policy = RoundRobin()
    instances = [InstanceView(id="a", inflight=100), InstanceView(id="b")]
    assert [policy.choose(REQUEST, instances) for _ in range(4)] == list("abab")


def test_unhealthy_instances_drop_out_of_the_rotation() -> None:
    policy = RoundRobin()
    instances = views("a", "b", "c", "d", unhealthy=("b",))
    assert [policy.choose(REQUEST, instances) for _ in range(6)] == list("acdacd")


def test_rotation_goes_on_when_an_instance_joins() -> None:
    policy = RoundRobin()
    assert [policy.choose(REQUEST, views("a", "b")) for _ in range(3)] == list("aba")
    assert [policy.choose(REQUEST, views("a", "b", "c")) for _ in range(6)] == list("bcabca")
