"""JSON logs, one object per line, with the request id of each request in the access log."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson

from serving import Server


def test_json_access_log_carries_the_request_id(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    server = Server(
        "--model", "echo", "--instances", "1", "--log-format", "json", "--access-log", log=log
    ).wait_ready()
    body = orjson.dumps(
        {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hi"]}]}
    )
    try:
        given = httpx.post(
            f"{server.url}/v2/models/echo/infer", content=body, headers={"X-Request-Id": "trace-42"}
        )
        generated = httpx.post(f"{server.url}/v2/models/echo/infer", content=b"{")
    finally:
        assert server.stop() == 0
    assert given.headers["x-request-id"] == "trace-42"
    lines = [orjson.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    access = {line["request_id"]: line for line in lines if line["logger"] == "dlproxy.access"}
    assert access["trace-42"]["status"] == 200 and access["trace-42"]["model"] == "echo"
    assert access[generated.headers["x-request-id"]]["status"] == 400
