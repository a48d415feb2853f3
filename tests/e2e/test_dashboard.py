"""The live dashboard: a self-contained page, and in a real browser every chart fills with data.

Headless Chromium (the system package) is driven over the DevTools protocol on a pipe, so no
Python dependency is needed. It opens ``/dashboard`` while background load runs, waits until the
charts have points, and keeps a screenshot in ``test-artifacts/dashboard.png``.
"""

from __future__ import annotations

import base64
import fcntl
import itertools
import json
import os
import random
import select
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from html.parser import HTMLParser
from importlib.resources import files
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import orjson
import pytest

from serving import Server

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHARTS = ("rps", "errors", "latency", "batch", "instances", "queue", "cache")
WIDTH, HEIGHT = 1280, 1600


def page_text() -> str:
    return (files("dlproxy.http") / "dashboard" / "index.html").read_text("utf-8")


class Links(HTMLParser):
    """Every src, href and action attribute of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("src", "href", "action") and v is not None]


def test_the_page_references_no_external_url() -> None:
    text = page_text()
    links = Links()
    links.feed(text)
    assert [u for u in links.urls if "//" in u or ":" in u.split("/")[0]] == []
    assert "http://" not in text and "https://" not in text
    assert "@import" not in text and "url(" not in text


@pytest.fixture(scope="module")
def cached_echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("dashboard") / "server.log"
    server = Server(
        "--model", "echo", "--instances", "2", "--threads", "1", "--cache", "lru", log=log
    ).wait_ready()
    yield server
    server.stop()


def test_the_gateway_serves_the_page_with_a_strict_policy(cached_echo: Server) -> None:
    response = httpx.get(f"{cached_echo.url}/dashboard")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert response.text == page_text()


class Load:
    """Closed-loop KServe clients in threads until stopped (or ``limit_s`` has passed). Half the
    texts repeat one of a few (cache hits), the rest are new; one request in 50 is malformed."""

    def __init__(self, url: str, clients: int = 3, limit_s: float = 60.0) -> None:
        self.url = f"{url}/v2/models/echo/infer"
        self.limit_s = limit_s
        self.codes: Counter[int] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,)) for n in range(clients)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        deadline = time.monotonic() + self.limit_s
        with httpx.Client(timeout=10) as client:
            for n in itertools.count():
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                size = rng.choice((1, 1, 2, 3))
                texts = [
                    f"hot-{rng.randrange(16)}" if rng.random() < 0.5 else f"cold-{seed}-{n}-{i}"
                    for i in range(size)
                ]
                body = orjson.dumps(
                    {
                        "inputs": [
                            {"name": "text", "shape": [size], "datatype": "BYTES", "data": texts}
                        ]
                    }
                )
                try:
                    code = client.post(self.url, content=b"{" if n % 50 == 49 else body).status_code
                except httpx.HTTPError:
                    code = 0
                with self._lock:
                    self.codes[code] += 1


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``):
    the browser reads commands on its fd 3 and writes replies and events on its fd 4, each message
    one JSON object followed by a NUL byte."""

    FLAGS = (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-dev-shm-usage",
        "--disable-background-timer-throttling",
        "--disable-renderer-backgrounding",
        "--hide-scrollbars",
        "--remote-debugging-pipe",
    )

    def __init__(self, executable: str, profile: Path, log: Path) -> None:
        # Above fd 10, so that bash's "3<&N 4>&M" never overwrites one with the other.
        commands_r, self._commands = (_high(fd) for fd in os.pipe())
        self._replies, replies_w = (_high(fd) for fd in os.pipe())
        self._log = open(log, "wb")
        self.process = subprocess.Popen(
            [
                "/bin/bash",
                "-c",
                f'exec "$0" "$@" 3<&{commands_r} 4>&{replies_w} {commands_r}<&- {replies_w}>&-',
                executable,
                *self.FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={WIDTH},{HEIGHT}",
                "about:blank",
            ],
            pass_fds=(commands_r, replies_w),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        os.close(commands_r)
        os.close(replies_w)
        self._ids = itertools.count(1)
        self._buffer = b""
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Sends one command and waits for its reply; events read meanwhile go to ``events``."""
        message: dict[str, Any] = {"id": next(self._ids), "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + 15
        while True:
            reply = self._read(deadline)
            if reply.get("id") != message["id"]:
                self.events.append(reply)
            elif "error" in reply:
                raise RuntimeError(f"{method} failed: {reply['error']}")
            else:
                return dict(reply["result"])

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            if not select.select([self._replies], [], [], max(0.0, deadline - time.monotonic()))[0]:
                raise TimeoutError("chromium did not answer within 15 s")
            chunk = os.read(self._replies, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium exited (code {self.process.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return dict(json.loads(message))

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (OSError, RuntimeError, TimeoutError):
            pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._commands)
        os.close(self._replies)
        self._log.close()


def _high(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[Chromium]:
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    browser = Chromium(executable, tmp_path / "profile", tmp_path / "chromium.log")
    yield browser
    browser.close()


CHART_STATE = """Object.fromEntries([...document.querySelectorAll("section.chart")].map((e) =>
  [e.id.slice(6), {points: +e.dataset.points, last: e.dataset.last === "" ? null : +e.dataset.last}]))"""
CARD_TEXT = """Object.fromEntries([...document.querySelectorAll(".card")].map((e) =>
  [e.id, e.querySelector(".value").textContent]))"""


def test_the_charts_fill_with_data_under_load(cached_echo: Server, chromium: Chromium) -> None:
    target = chromium.send("Target.createTarget", url="about:blank")["targetId"]
    session = chromium.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    chromium.send("Runtime.enable", session)
    chromium.send("Log.enable", session)
    chromium.send(
        "Emulation.setDeviceMetricsOverride",
        session,
        width=WIDTH,
        height=HEIGHT,
        deviceScaleFactor=1,
        mobile=False,
    )

    def evaluate(expression: str) -> Any:
        reply = chromium.send(
            "Runtime.evaluate", session, expression=expression, returnByValue=True
        )
        return reply["result"].get("value")

    def ready(charts: dict[str, Any], points: int = 3) -> bool:
        return (
            set(CHARTS) <= set(charts)
            and all(charts[name]["points"] >= points for name in CHARTS)
            and (charts["rps"]["last"] or 0) > 0
            and (charts["cache"]["last"] or 0) > 0
        )

    with Load(cached_echo.url) as load:
        chromium.send("Page.navigate", session, url=f"{cached_echo.url}/dashboard")
        deadline = time.monotonic() + 20
        charts = evaluate(CHART_STATE) or {}
        # Six points make a screenshot worth keeping; three are enough to pass.
        while not ready(charts, points=6) and time.monotonic() < deadline:
            time.sleep(0.25)
            charts = evaluate(CHART_STATE) or {}
        cards = evaluate(CARD_TEXT)
        shot = chromium.send("Page.captureScreenshot", session, format="png")["data"]
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "dashboard.png").write_bytes(base64.b64decode(shot))

    assert ready(charts), charts
    assert charts["latency"]["last"] > 0
    assert charts["batch"]["last"] >= 1
    assert charts["instances"]["last"] == 2
    assert charts["queue"]["last"] >= 0
    assert 0 < charts["cache"]["last"] <= 100
    assert "\u2013" not in cards.values(), cards  # an en dash: no value yet
    assert set(load.codes) <= {200, 400} and load.codes[200] > 0, load.codes
    problems = [
        e["params"]
        for e in chromium.events
        if e.get("method") == "Runtime.exceptionThrown"
        or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
    ]
    assert problems == []
