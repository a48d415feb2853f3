"""The scale-out settings: bounds with messages a person can act on, and how the cores are shared
when several gateways each run their own instances."""

from __future__ import annotations

import socket

import pytest
from pydantic import ValidationError

from dlproxy.assembly import instance_name
from dlproxy.listen import reuse_port_socket
from dlproxy.settings import Settings, usable_cores


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"gateways": 0}, "gateways must be from 1 to 64, got 0"),
        ({"ray_num_cpus": 0}, "ray_num_cpus must be > 0, got 0.0"),
        ({"ray_address": "10.0.0.1:6379"}, "add --backend ray"),
        ({"max_batch_tokens": -1}, r"max_batch_tokens must be >= 0 \(0: no bound\), got -1"),
        ({"borrow_threads": -2}, r"borrow_threads must be >= 0 \(0: off\), got -2"),
        ({"urgent_max_batch": -1}, r"urgent_max_batch must be >= 0 \(0: no cap\), got -1"),
        ({"client_weights": {"10.0.0.7": 0}}, "the weight of '10.0.0.7' must be > 0, got 0"),
        ({"client_weights": ["10.0.0.7"]}, "a weight is KEY=NUMBER, got '10.0.0.7'"),
    ],
)
def test_bad_scale_out_settings_say_what_to_change(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**values)  # type: ignore[arg-type]


def test_client_weights_are_read_from_repeated_flags() -> None:
    settings = Settings(client_weights=["sha256:0123456789abcdef=3", "10.0.0.7=0.5"])  # type: ignore[arg-type]
    assert settings.client_weights == {"sha256:0123456789abcdef": 3.0, "10.0.0.7": 0.5}


def test_a_lone_batch_borrows_every_core_with_one_gateway_and_none_with_several() -> None:
    assert Settings().resolved().borrow_threads == usable_cores()
    assert Settings(gateways=2).resolved().borrow_threads == 0  # it cannot see the other's load
    assert Settings(borrow_threads=0).resolved().borrow_threads == 0


def test_gateways_share_the_cores_instead_of_each_taking_all_of_them() -> None:
    cores = usable_cores()
    one = Settings(models=["echo"]).resolved()
    two = Settings(models=["echo"], gateways=2).resolved()
    assert one.instances == max(1, min(cores, 8))
    assert two.instances == max(1, min(cores // 2, 8))
    assert two.threads == max(1, cores // (two.instances * 2))  # type: ignore[operator]


def test_instance_ids_name_their_gateway_only_when_there_are_several() -> None:
    assert instance_name(Settings(), 3) is None  # the instance's own default (w3, r3)
    assert instance_name(Settings(gateways=2, gateway_index=2), 3) == "g2.w3"
    assert instance_name(Settings(gateways=2, gateway_index=1, backend="ray"), 1) == "g1.r1"


def test_two_sockets_bind_one_port_with_reuse_port() -> None:
    first = reuse_port_socket("127.0.0.1", 0)
    try:
        port = first.getsockname()[1]
        second = reuse_port_socket("127.0.0.1", port)
        second.close()
        with socket.socket() as plain, pytest.raises(OSError):
            plain.bind(("127.0.0.1", port))  # without SO_REUSEPORT the port is taken
    finally:
        first.close()
