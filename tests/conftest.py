"""Session-wide test settings shared by every test directory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import hypothesis  # noqa: F401  imported first: a late import under pytest's assertion
import pytest  # rewriter trips CPython 3.11's "AST constructor recursion depth mismatch"

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def dlproxy_home() -> Iterator[Path]:
    """One cache directory for the whole session (and later sessions): models export once.

    ``<repo>/.dlproxy-home`` is gitignored; servers started by tests inherit it from the
    environment, so they reuse the exports too.
    """
    path = REPO / ".dlproxy-home"
    path.mkdir(exist_ok=True)
    previous = os.environ.get("DLPROXY_HOME")
    os.environ["DLPROXY_HOME"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("DLPROXY_HOME", None)
    else:
        os.environ["DLPROXY_HOME"] = previous


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Integration and end-to-end tests start real processes and servers: all of them are
    ``slow`` (``-m "not slow"`` runs the in-process suite alone)."""
    started_processes = (REPO / "tests" / "integration", REPO / "tests" / "e2e")
    for item in items:
        if any(folder in Path(str(item.path)).parents for folder in started_processes):
            item.add_marker(pytest.mark.slow)
