"""`dlproxy serve --model-repository DIR`: several versions of a model at once, each reached by
its versioned route, the newest on the plain route, per-version metadata and readiness, cache
entries kept apart by version, and broken entries left out without stopping the others."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from serving import Server

TEXT = "Versions of one model are served side by side."


def write(root: Path, name: str, number: str, model: str) -> None:
    folder = root / name / number
    folder.mkdir(parents=True)
    (folder / "model.json").write_text(json.dumps({"model": model}))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("repository")
    write(root, "embed", "1", "minilm:fp32")
    write(root, "embed", "2", "minilm:int8")
    (root / "embed" / "config.json").write_text(
        json.dumps({"version_policy": {"all": True}, "instances": 1, "threads": 1, "max_batch": 8})
    )
    write(root, "echoes", "7", "echo")
    (root / "broken").mkdir()  # no version folder: reported, not served
    log = tmp_path_factory.mktemp("repository-server") / "server.log"
    running = Server(
        *("--model-repository", str(root), "--instances", "1", "--threads", "1"),
        *("--cache", "lru"),
        log=log,
    )
    yield running.wait_ready()
    running.stop()


def infer(server: Server, path: str) -> httpx.Response:
    body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [TEXT]}]}
    return httpx.post(f"{server.url}{path}", json=body, timeout=60)


def test_each_version_answers_on_its_route_and_the_newest_on_the_plain_one(server: Server) -> None:
    one = infer(server, "/v2/models/embed/versions/1/infer")
    two = infer(server, "/v2/models/embed/versions/2/infer")
    plain = infer(server, "/v2/models/embed/infer")
    assert [r.json()["model_version"] for r in (one, two, plain)] == ["1", "2", "2"]
    assert {r.json()["model_name"] for r in (one, two, plain)} == {"embed"}
    first, second = (np.array(r.json()["outputs"][0]["data"]) for r in (one, two))
    assert 0.98 < float(first @ second) < 0.99999  # fp32 and int8: close, not the same numbers
    assert plain.headers["x-dlproxy-cache"] == "l1"  # version 2's entry...
    assert two.headers["x-dlproxy-cache"] == "miss"  # ...which version 1's did not answer


def test_metadata_and_readiness_per_version(server: Server) -> None:
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    assert client.get_model_metadata("embed", "1")["versions"] == ["1"]
    assert client.get_model_metadata("embed")["versions"] == ["2"]
    assert client.is_model_ready("embed", "1") and client.is_model_ready("embed", "2")
    assert client.is_model_ready("echoes", "7")


def test_unknown_versions_and_broken_entries_are_404_with_the_reason(server: Server) -> None:
    missing = infer(server, "/v2/models/embed/versions/3/infer")
    assert missing.status_code == 404
    assert "no version '3' served (served: 1, 2)" in missing.json()["error"]
    broken = infer(server, "/v2/models/broken/infer")
    assert broken.status_code == 404 and "served: echoes, embed" in broken.json()["error"]
    assert httpx.get(f"{server.url}/v2/models/embed/versions/3", timeout=10).status_code == 404
