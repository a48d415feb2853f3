"""An upstream's address as logs, errors and /admin/instances show it."""

from __future__ import annotations

from dlproxy.instances.upstream import redacted


def test_an_upstream_password_is_never_shown() -> None:
    assert redacted("http://admin:hunter2@10.0.0.5:8000/x") == "http://admin:***@10.0.0.5:8000/x"
    assert redacted("http://10.0.0.5:8000") == "http://10.0.0.5:8000"
