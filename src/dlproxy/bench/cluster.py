"""A real Ray cluster of several nodes on this machine, for tests and benchmarks.

Each node is one ``ray start --block`` process in its own session (the head first, the others
joining it), named with ``--node-name`` and holding a custom resource of the same name. Nodes are
stopped by their process trees, never with ``ray stop`` (which would end every Ray process on the
machine, other users' too); nothing started here outlives ``stop()``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import psutil

from dlproxy.console import free_port

# Find a dead node in ~1.5 s instead of ~15 s, so a lost node's actors are replaced quickly.
FAST_HEALTH_CHECKS = {"health_check_period_ms": 500, "health_check_failure_threshold": 3}


class LocalRayCluster:
    """``with LocalRayCluster(["node_a", "node_b"]) as cluster: ... cluster.address``."""

    def __init__(
        self,
        nodes: Sequence[str] = ("node_a", "node_b"),
        cpus_per_node: int = 1,
        start_timeout: float = 120.0,
    ) -> None:
        if not nodes:
            raise ValueError("a cluster needs at least one node (the head)")
        self.names = list(nodes)
        self.cpus_per_node = cpus_per_node
        self.start_timeout = start_timeout
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        # Short: Ray puts socket paths under it, and they must stay under 108 bytes.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="dlray-", dir="/tmp"))
        self.nodes: dict[str, subprocess.Popen[bytes]] = {}

    def __enter__(self) -> LocalRayCluster:
        try:
            for name in self.names:
                self.start_node(name)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start_node(self, name: str) -> None:
        """Start one node (the first one started is the head) and wait until it has joined."""
        ray = str(Path(sys.executable).with_name("ray"))
        common = [
            "--num-cpus",
            str(self.cpus_per_node),
            "--resources",
            json.dumps({name: 1}),
            "--node-name",
            name,
            "--object-store-memory",
            str(100 * 1024 * 1024),
            "--disable-usage-stats",
            "--block",
        ]
        if not self.nodes:
            role = [
                "--head",
                "--port",
                str(self.port),
                "--temp-dir",
                str(self.temp_dir),
                "--include-dashboard",
                "false",
                "--system-config",
                json.dumps(FAST_HEALTH_CHECKS),
            ]
        else:
            role = ["--address", self.address]
        log = (self.temp_dir / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [ray, "start", *role, *common],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
        )
        self.nodes[name] = process
        deadline = time.monotonic() + self.start_timeout
        while b"will now block" not in (self.temp_dir / f"{name}.log").read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                tail = (self.temp_dir / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"Ray node {name} did not start:\n{tail}")
            time.sleep(0.2)

    def stop_node(self, name: str, graceful: bool = False) -> None:
        """End one node and everything it runs (SIGKILL by default: a node lost at once)."""
        process = self.nodes.pop(name)
        _end_tree(process.pid, graceful)
        process.wait()

    def stop(self) -> None:
        """End every node, the head last, then any process still under our temp dir."""
        for name in reversed(list(self.nodes)):
            self.stop_node(name, graceful=True)
        for leftover in _processes_mentioning(str(self.temp_dir)):
            _end([leftover], graceful=False)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _end_tree(pid: int, graceful: bool) -> None:
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    tree = [*root.children(recursive=True), root]  # collected before anyone is re-parented
    _end(tree, graceful)


def _end(processes: list[psutil.Process], graceful: bool) -> None:
    sig = signal.SIGTERM if graceful else signal.SIGKILL
    for process in processes:
        try:
            process.send_signal(sig)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(processes, timeout=10 if graceful else 5)
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)


def _processes_mentioning(text: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if any(text in part for part in process.info["cmdline"] or ()):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found
