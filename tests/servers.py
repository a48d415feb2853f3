"""Real cache servers for tests: ``redis-server`` and ``memcached`` from the system packages, each
on a free port of 127.0.0.1, started and waited for until they answer, stopped by PID.

Both can be killed (SIGKILL), paused (SIGSTOP: a hung server) and started again on the same port,
which is how the tests make a shared level fail and come back.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psutil
import pytest

from serving import free_port


def _answers(port: int, ask: bytes, expect: bytes) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(ask)
            return s.recv(64).startswith(expect)
    except OSError:
        return False


class CacheServer:
    """One server process; ``start`` again after ``kill`` reuses the port."""

    ping: tuple[bytes, bytes] = (b"", b"")
    stop_signal = signal.SIGTERM

    def __init__(self, executable: str) -> None:
        path = shutil.which(executable)
        if path is None:
            pytest.skip(f"{executable} is not installed (apt-get install {executable})")
        self.executable = path
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 10.0) -> None:
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while not _answers(self.port, *self.ping):
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.command()} exited with code {self.process.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"{self.executable} did not answer on port {self.port}")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: connections drop at once, nothing is saved."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def pause(self) -> None:
        """SIGSTOP: the port stays open but nothing answers (a hung server). Returns once the
        process is stopped: the signal is delivered asynchronously, and a server still running
        for a moment answered a request meant to find it hung (seen once with memcached)."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)
        process = psutil.Process(self.process.pid)
        deadline = time.monotonic() + 5
        while process.status() != psutil.STATUS_STOPPED and time.monotonic() < deadline:
            time.sleep(0.001)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, signal.SIGCONT)  # a paused server cannot handle SIGTERM
        self.process.send_signal(self.stop_signal)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class RedisServer(CacheServer):
    ping = (b"PING\r\n", b"+PONG")

    def __init__(self) -> None:
        super().__init__("redis-server")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            self.executable,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]


class MemcachedServer(CacheServer):
    ping = (b"version\r\n", b"VERSION")
    stop_signal = signal.SIGKILL  # it holds nothing worth a graceful stop, which takes ~0.7 s

    def __init__(self) -> None:
        super().__init__("memcached")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        command = [self.executable, "-p", str(self.port), "-U", "0", "-l", "127.0.0.1"]
        if os.geteuid() == 0:  # memcached refuses to run as root unless told which user to be
            command += ["-u", "root"]
        return command


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def memcached_server() -> Iterator[MemcachedServer]:
    server = MemcachedServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
