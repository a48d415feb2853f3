from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serving import Server


@pytest.fixture(scope="module")
def echo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("echo") / "server.log"
    server = Server(
        "--admin-loopback", "--model", "echo", "--instances", "2", "--threads", "1", log=log
    ).wait_ready()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def minilm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("minilm") / "server.log"
    server = Server(
        "--admin-loopback", "--model", "minilm:fp32", "--instances", "2", "--threads", "1", log=log
    ).wait_ready()
    yield server
    server.stop()
