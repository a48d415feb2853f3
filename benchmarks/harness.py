"""What every benchmark script shares: a ``dlproxy serve`` subprocess on a free port, stopped by its
PID, and ``dlproxy bench`` runs read back as JSON. Load goes to 127.0.0.1 only."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from dlproxy.console import free_port

DLPROXY = [sys.executable, "-m", "dlproxy"]


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:
        data: dict[str, Any] = json.loads(response.read())
    return data


def run_json(args: list[str]) -> dict[str, Any]:
    """Run a dlproxy command with ``--json`` and return what it wrote."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as out:
        path = Path(out.name)
    subprocess.run([*args, "--json", str(path)], check=True, stdout=subprocess.DEVNULL)
    data: dict[str, Any] = json.loads(path.read_text())
    path.unlink()
    return data


def _exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


class Serving:
    """``dlproxy serve`` in a subprocess, ready on enter, stopped by its PID on exit."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            # A benchmark stopped with SIGTERM unwinds (and stops its servers) like one stopped
            # with Ctrl-C, instead of leaving them orphaned.
            signal.signal(signal.SIGTERM, _exit)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            # A benchmark's server is local and trusted: its admin routes answer loopback callers.
            [
                *DLPROXY,
                "serve",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                "--admin-loopback",
                *args,
            ],
            env=env,
        )

    def __enter__(self) -> Serving:
        try:
            self._wait_ready()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dlproxy serve exited with code {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError("server did not become ready")

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            self.process.wait(60)

    def batches(self, model: str = "minilm") -> tuple[int, int]:
        """(batches, items) the instances of ``model`` have computed so far."""
        figures = get_json(f"{self.url}/stats")["models"][model]
        return int(figures["batches"]), int(figures["items"])


def bench(
    url: str, model: str, concurrency: int, duration: float, protocol: str = "kserve"
) -> dict[str, Any]:
    """A closed-loop ``dlproxy bench`` run with a 3 s warm-up."""
    return run_json(
        [
            *DLPROXY,
            "bench",
            url,
            "--model",
            model,
            "--concurrency",
            str(concurrency),
            "--duration",
            str(duration),
            "--warmup",
            "3",
            "--protocol",
            protocol,
        ]
    )
