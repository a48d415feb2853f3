"""The ASGI app over a Gateway of fake instances, through httpx's ASGI transport: the HTTP layer's
promises (status codes, headers, protocols, one answer per request) without a process."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from dlproxy.caching.base import MemoryCache
from dlproxy.caching.tiered import TieredCache
from dlproxy.errors import InstanceFailed, ModelError
from dlproxy.gateway import Gateway
from dlproxy.http.auth import Authenticator
from dlproxy.http.routes import InferenceApp
from fakes import FakeInstance, fake_gateway

INFER = "/v2/models/fake/infer"


def body(*rows: float) -> dict[str, Any]:
    data = [[v] * 4 for v in rows]
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": [len(rows), 4], "data": data}]}


class Served:
    def __init__(
        self, client: httpx.AsyncClient, instances: list[FakeInstance], gateway: Gateway
    ) -> None:
        self.client = client
        self.instances = instances
        self.gateway = gateway


@pytest.fixture
async def served(request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    settings: dict[str, Any] = getattr(request, "param", {})
    gateway, instances = await fake_gateway(
        count=2, cache=TieredCache(MemoryCache("lru", 100)), **settings
    )
    app = InferenceApp(gateway, 1 << 16)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield Served(client, instances, gateway)
    await gateway.close()


async def test_kserve_infer_answers_with_the_outputs_and_the_headers(served: Served) -> None:
    response = await served.client.post(INFER, json=body(1, 2), headers={"X-Request-Id": "r1"})
    assert response.status_code == 200
    answer = response.json()
    assert answer["model_name"] == "fake" and answer["id"] == "r1"
    (output,) = answer["outputs"]
    assert output["name"] == "embedding" and output["shape"] == [2, 4]
    assert output["data"] == [2.0] * 4 + [4.0] * 4
    assert response.headers["x-request-id"] == "r1"
    assert response.headers["x-dlproxy-instance"] in {i.id for i in served.instances}
    assert response.headers["x-dlproxy-cache"] == "miss"
    again = await served.client.post(INFER, json=body(2, 1))
    assert again.headers["x-dlproxy-cache"] == "l1"


async def test_openai_embeddings_come_from_the_same_gateway(served: Served) -> None:
    # The fake takes FP32 x, not text: the gateway refuses the texts with a 400 naming the input.
    response = await served.client.post("/v1/embeddings", json={"model": "fake", "input": "hi"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert "missing input(s) ['x']" in error["message"]
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("payload", "status", "code", "param"),
    [
        ({"model": "nope", "input": "hi"}, 404, "model_not_found", "model"),
        ({"model": "fake", "input": []}, 400, "invalid_request", "input"),
        ({"model": "fake", "input": [1, 2]}, 400, "invalid_request", "input"),
        ({"model": "fake", "input": "hi"}, 400, "invalid_request", None),
    ],
)
async def test_openai_errors_have_openais_shape_with_a_string_code_and_the_param(
    served: Served, payload: dict[str, Any], status: int, code: str, param: str | None
) -> None:
    response = await served.client.post("/v1/embeddings", json=payload)
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code and error["param"] == param and error["message"]


@pytest.mark.parametrize(
    ("path", "payload", "status", "message"),
    [
        ("/v2/models/nope/infer", body(1), 404, "model 'nope' is not served here"),
        (INFER, b"{not json", 400, "invalid inference request"),
        (INFER, {"inputs": []}, 400, "the request has no inputs"),
        (INFER, b"x" * (1 << 17), 413, "the limit is 65536"),
    ],
)
async def test_bad_requests_get_a_clear_error_and_nothing_is_computed(
    served: Served, path: str, payload: Any, status: int, message: str
) -> None:
    content = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    response = await served.client.post(path, content=content)
    assert response.status_code == status
    assert message in response.json()["error"]
    assert all(i.batches == [] for i in served.instances)


async def test_a_deadline_from_the_header_is_answered_504(served: Served) -> None:
    for instance in served.instances:
        instance.delay = 1.0
    response = await served.client.post(INFER, json=body(1), headers={"X-Request-Timeout-Ms": "30"})
    assert response.status_code == 504
    assert "deadline" in response.json()["error"]


@pytest.mark.parametrize("served", [{"instance": {"max_queue_items": 1}}], indirect=True)
async def test_a_full_queue_is_refused_with_503_and_retry_after(served: Served) -> None:
    for instance in served.instances:
        instance.delay = 0.2
    answers = await asyncio.gather(
        *(served.client.post(INFER, json=body(float(i))) for i in range(12))
    )
    statuses = sorted(a.status_code for a in answers)
    assert statuses.count(200) >= 2 and 503 in statuses
    assert set(statuses) <= {200, 503}  # every request got exactly one answer
    refused = next(a for a in answers if a.status_code == 503)
    assert float(refused.headers["retry-after"]) > 0


async def test_binary_outputs_carry_the_header_length(served: Served) -> None:
    request = body(3)
    request["parameters"] = {"binary_data_output": True}
    response = await served.client.post(INFER, json=request)
    length = int(response.headers["inference-header-content-length"])
    header = orjson.loads(response.content[:length])
    assert header["outputs"][0]["parameters"]["binary_data_size"] == 16
    values = np.frombuffer(response.content[length:], "<f4")
    assert values.tolist() == [6.0] * 4


# --- #16 item 3: values that would not survive the trip to a worker are refused at decode


@pytest.mark.parametrize(
    ("parameters", "where"),
    [
        ({"seed": 2**70}, "parameter 'seed'"),
        ({"ids": [1, -(2**64)]}, "parameter 'ids[1]'"),
        ({"nested": {"deep": 10**30}}, "parameter 'nested.deep'"),
    ],
)
async def test_an_integer_beyond_64_bits_is_a_400_naming_it(
    served: Served, parameters: dict[str, Any], where: str
) -> None:
    payload = {**body(1), "parameters": parameters}
    response = await served.client.post(INFER, content=_big_json(payload))
    assert response.status_code == 400, response.text
    assert where in response.json()["error"] and "64 bits" in response.json()["error"]
    assert all(instance.batches == [] for instance in served.instances)  # never reached one


@pytest.mark.parametrize("milliseconds", [str(10**400), str(10**20)])
async def test_a_deadline_too_far_away_is_a_400(served: Served, milliseconds: str) -> None:
    response = await served.client.post(
        INFER, json=body(1), headers={"X-Request-Timeout-Ms": milliseconds}
    )
    assert response.status_code == 400 and "X-Request-Timeout-Ms" in response.json()["error"]


def _big_json(payload: dict[str, Any]) -> bytes:
    """JSON with integers of any size (orjson refuses to write them; the stdlib does not)."""
    import json

    return json.dumps(payload).encode()


def _binary(datatype: str, shape: list[int], data: bytes) -> tuple[bytes, dict[str, str]]:
    header = {
        "inputs": [
            {
                "name": "x",
                "datatype": datatype,
                "shape": shape,
                "parameters": {"binary_data_size": len(data)},
            }
        ]
    }
    head = orjson.dumps(header)
    return head + data, {"Inference-Header-Content-Length": str(len(head))}


@pytest.mark.parametrize(
    ("datatype", "shape", "status", "complaint"),
    [
        ("BYTES", [1, 4194304], 400, "input 'x' must be FP32, got BYTES"),
        ("FP32", [1, 5], 400, r"input 'x' has shape \[1, 5\]; the model takes \[-1, 4\]"),
        ("FP32", [300, 4], 413, "the request has 300 items; the limit is 256"),
    ],
)
async def test_an_input_is_checked_against_the_model_before_its_data_is_read(
    served: Served, datatype: str, shape: list[int], status: int, complaint: str
) -> None:
    # The data is also broken (too short): the answer names the spec, so it was never read.
    content, headers = _binary(datatype, shape, b"\0\0\0\0" * 1000)
    response = await served.client.post(INFER, content=content, headers=headers)
    assert response.status_code == status
    assert re.search(complaint, response.json()["error"]), response.json()["error"]


async def test_text_elements_beyond_what_any_request_may_hold_are_refused_unread() -> None:
    gateway, _ = await fake_gateway(count=1)
    gateway.pools["fake"].instances[0].spec = dataclasses.replace(  # a model that declares none
        gateway.pools["fake"].spec, inputs=()
    )
    app = InferenceApp(gateway, 1 << 26)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        content, headers = _binary("BYTES", [1, 4194304], b"\0\0\0\0" * 4194304)
        response = await client.post(INFER, content=content, headers=headers)
    assert response.status_code == 413
    assert "4194304 text elements; the limit is 4096" in response.json()["error"]
    await gateway.close()


async def test_a_deadline_longer_than_the_cap_is_cut_to_it() -> None:
    gateway, instances = await fake_gateway(count=1, coalesce=False)
    instances[0].hang = True
    app = InferenceApp(gateway, 1 << 16, max_timeout_ms=50)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        started = asyncio.get_running_loop().time()
        response = await client.post(
            INFER, json=body(1), headers={"X-Request-Timeout-Ms": "3600000"}
        )
    assert response.status_code == 504
    assert asyncio.get_running_loop().time() - started < 1.0
    await gateway.close(drain_seconds=0.1)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ModelError("Traceback: KeyError at /srv/models/secret.py line 12"), 500),
        (InstanceFailed("upstream u1 (http://admin:hunter2@10.0.0.5:8000) failed"), 503),
    ],
)
async def test_internals_are_logged_and_the_client_gets_a_request_id(
    served: Served,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    error: Exception,
    status: int,
) -> None:
    async def failing(request: Any) -> Any:
        raise error

    monkeypatch.setattr(served.gateway, "infer", failing)
    response = await served.client.post(INFER, json=body(1), headers={"X-Request-Id": "r-42"})
    assert response.status_code == status
    message = response.json()["error"]
    assert "request id r-42" in message
    for secret in ("secret.py", "hunter2", "10.0.0.5"):
        assert secret not in message
    assert str(error) in caplog.text and "r-42" in caplog.text


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
async def test_binary_nan_and_infinity_are_refused_as_json_ones_are(
    served: Served, value: float
) -> None:
    x = np.ones((1, 4), np.float32)
    x[0, 2] = value
    content, headers = _binary("FP32", [1, 4], x.tobytes())
    response = await served.client.post(INFER, content=content, headers=headers)
    assert response.status_code == 400
    assert "NaN or infinite" in response.json()["error"]
    assert served.instances[0].batches == served.instances[1].batches == []  # nothing computed


@pytest.mark.parametrize(
    ("headers", "parameters", "status"),
    [
        ({"X-Priority": "3"}, {}, 200),
        ({}, {"priority": 3}, 200),
        ({"X-Priority": "10"}, {}, 400),
        ({}, {"priority": -1}, 400),
        ({}, {"priority": "high"}, 400),
    ],
)
async def test_a_priority_comes_from_the_header_or_the_parameters_and_is_checked(
    served: Served, headers: dict[str, str], parameters: dict[str, Any], status: int
) -> None:
    payload = {**body(1), "parameters": parameters} if parameters else body(1)
    response = await served.client.post(INFER, json=payload, headers=headers)
    assert response.status_code == status
    if status == 400:
        assert "priority must be an integer from 0" in response.json()["error"]
    else:
        assert all(p == {} for i in served.instances for p in i.parameters)  # not the model's


async def test_a_saturated_model_refuses_before_reading_and_decoding_the_body() -> None:
    """Every instance's queue is full: the next request is refused (503, saying why) before its
    body is read, so even a body that is not JSON gets the 503, not a 400, and costs no decode."""
    gateway, instances = await fake_gateway(
        count=1, instance={"max_queue_items": 1, "depth": 1}, coalesce=False
    )
    instances[0].hang = True  # the first batch is held: the second request stays queued
    transport = httpx.ASGITransport(app=InferenceApp(gateway, 1 << 16))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        deadline = {"X-Request-Timeout-Ms": "1000"}
        held = [
            asyncio.create_task(client.post(INFER, json=body(v), headers=deadline)) for v in (1, 2)
        ]
        for _ in range(100):  # both reach the instance: one held, one queued
            await asyncio.sleep(0.01)
            if instances[0].batcher.queued:
                break
        refused = await client.post(INFER, content=b"{ not json")
        assert refused.status_code == 503
        assert "the instance queue is full" in refused.json()["error"]
        assert refused.headers["retry-after"]
        assert [r.status_code for r in await asyncio.gather(*held)] == [504, 504]
    await gateway.close(drain_seconds=0.1)


async def test_fair_shares_tell_clients_apart_by_their_verified_api_key() -> None:
    """Two API keys from the same address: the first fills the instance's queue; the second's
    request still gets a place, and the first key's newest is refused (429, naming the fair
    share), so the shares key on the verified credential, not the address."""
    gateway, instances = await fake_gateway(
        count=1, instance={"max_queue_items": 2, "depth": 1}, coalesce=False
    )
    instances[0].hang = True
    app = InferenceApp(gateway, 1 << 16, auth=Authenticator(["key-of-a", "key-of-b"]))
    transport = httpx.ASGITransport(app=app)

    def headers(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}", "X-Request-Timeout-Ms": "1000"}

    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        heavy = []
        for v in (1, 2, 3):  # one held by the instance, two queued: the queue is full
            heavy.append(
                asyncio.create_task(client.post(INFER, json=body(v), headers=headers("key-of-a")))
            )
            for _ in range(100):
                await asyncio.sleep(0.01)
                if instances[0].batcher.queued == min(v - 1, 2):
                    break
        light = asyncio.create_task(client.post(INFER, json=body(9), headers=headers("key-of-b")))
        answers = await asyncio.gather(*heavy, light)
    assert [a.status_code for a in answers] == [504, 504, 429, 504]
    assert "more than its fair share" in answers[2].json()["error"]
    await gateway.close(drain_seconds=0.1)
