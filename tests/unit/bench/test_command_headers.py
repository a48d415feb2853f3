"""``dlproxy bench --header``: headers sent with every request."""

from __future__ import annotations

import pytest

from dlproxy.bench.command import _header
from dlproxy.bench.inputs import parse_inputs
from dlproxy.bench.loadgen import LoadSpec, _Run


def test_a_header_is_name_colon_value() -> None:
    assert _header("X-Priority: 9") == ("X-Priority", "9")
    with pytest.raises(ValueError, match="NAME:VALUE"):
        _header("X-Priority")


def test_the_headers_go_with_the_content_type() -> None:
    spec = LoadSpec("http://127.0.0.1:1", "m", headers=(("X-Priority", "9"),))
    run = _Run(spec, parse_inputs("unique", 0))
    assert run.headers == {"Content-Type": "application/json", "X-Priority": "9"}
