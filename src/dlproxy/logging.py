"""Log setup: human-readable text by default, one JSON object per line with ``--log-format json``.

Request logs (``--access-log``) carry the request id (``X-Request-Id``, accepted or generated), so a
client's report can be matched to the server's line. Secrets never reach a log record: the access
log names no header but the request id.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson

ACCESS = logging.getLogger("dlproxy.access")
_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _RESERVED})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure(level: str, fmt: str) -> None:
    """Install one stderr handler on the root logger, in the chosen format."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    elif fmt == "text":
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    else:
        raise ValueError(f"Unknown log format '{fmt}'; choose json or text.")
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def access(
    request_id: str,
    model: str,
    protocol: str,
    status: int,
    seconds: float,
    instance: str,
    cache: str,
) -> None:
    """One line per answered inference request (only when the access log is on)."""
    ACCESS.info(
        "%s %s %s %d %.1f ms",
        request_id,
        protocol,
        model,
        status,
        seconds * 1000,
        extra={
            "request_id": request_id,
            "model": model,
            "protocol": protocol,
            "status": status,
            "duration_ms": round(seconds * 1000, 3),
            "instance": instance,
            "cache": cache,
        },
    )


@contextmanager
def quiet_logger(name: str = "") -> Iterator[None]:
    """Only errors from logger ``name`` ("" is the root) for the block: the noise of export and
    quantization tools (advice, tracer notes) is not news to a user."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
