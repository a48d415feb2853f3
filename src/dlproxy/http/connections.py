"""Guards on client connections, as nginx keeps them: a cap on open connections, a time limit on
sending the request headers, a cap on their size, and a time limit between two pieces of a body.

Without them a client holding thousands of half-sent requests ties up descriptors and memory
until nothing else is served. Each refusal is an HTTP answer a person can act on, then the
connection is closed: 503 (too many connections), 408 (too slow), 431 (headers too large). The
guards are a subclass of uvicorn's httptools protocol (``guarded_protocol``), so every check is
a counter or a timer on the event loop: nothing per byte.
"""

from __future__ import annotations

import asyncio
import http
from dataclasses import dataclass
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_connections: int = 4096
    header_timeout: float = 10.0
    """Seconds a client has to send a request's headers, from its first byte (or the connection)."""
    body_timeout: float = 30.0
    """Seconds a client may leave between two pieces of a request body."""
    max_header_bytes: int = 32768


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol with ``ConnectionLimits`` (set by ``guarded_protocol``)."""

    limits = ConnectionLimits()
    refused = {"connections": 0, "header_timeout": 0, "body_timeout": 0, "header_size": 0}
    """Connections refused, by reason (shared by every connection of the server)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._awaiting_headers = True
        self._header_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        if len(self.connections) > self.limits.max_connections:
            self._refuse(
                "connections",
                503,
                f"the server holds its limit of {self.limits.max_connections} connections; "
                "try again shortly",
            )
            return
        self._arm(self.limits.header_timeout, "header_timeout")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._awaiting_headers:
            self._header_bytes += len(data)
            if self._timer is None:  # the first byte of a request on a kept-alive connection
                self._arm(self.limits.header_timeout, "header_timeout")
        super().data_received(data)
        if self._awaiting_headers and self._header_bytes > self.limits.max_header_bytes:
            self._refuse(
                "header_size",
                431,
                f"the request headers are over the limit of {self.limits.max_header_bytes} bytes",
            )

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        # The bytes counted may hold the start of the body too: only then are headers summed.
        if self._header_bytes > self.limits.max_header_bytes and _size(self) > (
            self.limits.max_header_bytes
        ):
            self._refuse(
                "header_size",
                431,
                f"the request headers are over the limit of {self.limits.max_header_bytes} bytes",
            )
            return
        self._header_bytes = 0
        self._arm(self.limits.body_timeout, "body_timeout")
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self.transport.is_closing():  # refused: the parser reads on, nobody listens
            return
        self._arm(self.limits.body_timeout, "body_timeout")
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        self._awaiting_headers = True
        self._header_bytes = 0
        if not self.transport.is_closing():
            super().on_message_complete()

    def _arm(self, seconds: float, reason: str) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._timed_out, reason, seconds)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self, reason: str, seconds: float) -> None:
        self._timer = None
        what = "headers" if reason == "header_timeout" else "body"
        self._refuse(reason, 408, f"the request {what} did not arrive within {seconds:g} s")

    def _refuse(self, reason: str, status: int, message: str) -> None:
        """Answer ``status`` (unless an answer was begun) and close the connection."""
        self._disarm()
        self.refused[reason] += 1
        if self.transport.is_closing():
            return
        if self.cycle is None or not self.cycle.response_started:
            body = orjson.dumps({"error": message})
            phrase = http.HTTPStatus(status).phrase
            head = (
                f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n"
            )
            if status == 503:
                head += "retry-after: 1\r\n"
            self.transport.write(head.encode() + b"\r\n" + body)
        self.transport.close()


def _size(protocol: HttpToolsProtocol) -> int:
    """Bytes of a request's target and headers."""
    return len(protocol.url) + sum(len(name) + len(value) + 4 for name, value in protocol.headers)


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedProtocol]:
    """The protocol class for one server (uvicorn takes a class): its limits, its counters."""
    counters: dict[str, int] = dict.fromkeys(GuardedProtocol.refused, 0)
    attributes: dict[str, Any] = {"limits": limits, "refused": counters}
    return type("Guarded", (GuardedProtocol,), attributes)
