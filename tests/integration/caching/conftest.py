"""Real ``redis-server`` and ``memcached`` processes, one per test, on free ports."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/: servers, serving
sys.path.insert(0, str(Path(__file__).resolve().parent))  # cache_rows

import servers


@pytest.fixture
def redis_server() -> Iterator[servers.RedisServer]:
    with servers.redis_server() as server:
        yield server


@pytest.fixture
def memcached_server() -> Iterator[servers.MemcachedServer]:
    with servers.memcached_server() as server:
        yield server
