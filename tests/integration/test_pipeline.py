"""Model-parallel instances: minilm:torch cut into K real stage processes behind one instance.

Outputs equal the unsplit model's; a dead stage fails over like a dead worker; and a served
request (a 5,000-word text among them) goes through a K=2 instance over HTTP.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
import zmq.asyncio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: serving

from dlproxy.assembly import build_pools, start_pools
from dlproxy.gateway import Gateway, Limits
from dlproxy.instances.pipeline import PipelineInstance
from dlproxy.models.builtin.corpus import sentences
from dlproxy.models.builtin.minilm import MiniLM
from dlproxy.settings import Settings
from dlproxy.types import InferenceRequest
from serving import Server

pytestmark = pytest.mark.slow

TEXTS = sentences()


def words(count: int) -> str:
    rng = random.Random(count)
    out: list[str] = []
    while len(out) < count:
        out += rng.choice(TEXTS).split()
    return " ".join(out)


LONG = words(5000)  # 27 windows: sent once, over HTTP
SHORT = TEXTS[:40]
ITEMS = [*SHORT, words(600)]  # mixed lengths; the last text is cut into 4 windows


@pytest.fixture(scope="module")
def expected() -> np.ndarray:
    model = MiniLM("torch", threads=1)
    model.load()
    return model.embed([*ITEMS, LONG])


def item_request(i: int) -> InferenceRequest:
    return InferenceRequest("minilm", {"text": np.array([ITEMS[i].encode()], dtype=object)})


@pytest.fixture
async def gateway(request: pytest.FixtureRequest) -> AsyncIterator[Gateway]:
    stages, instances = request.param
    context = zmq.asyncio.Context()
    settings = Settings(
        models=["minilm:torch"],
        instances=instances,
        threads=1,
        pipeline_stages=stages,
        max_batch=8,
        coalesce=False,
    )
    pools = build_pools(settings, context)
    await start_pools(pools, instances)
    served = Gateway(pools, Limits())
    try:
        yield served
    finally:
        await served.close()
        context.term()


async def embed_all(gateway: Gateway) -> np.ndarray:
    responses = await asyncio.gather(*(gateway.infer(item_request(i)) for i in range(len(ITEMS))))
    return np.concatenate([r.outputs["embedding"] for r in responses])


@pytest.mark.parametrize("gateway", [(3, 1)], indirect=True)
async def test_three_stages_compute_what_the_unsplit_model_computes(
    gateway: Gateway, expected: np.ndarray
) -> None:
    (instance,) = gateway.pools["minilm"].instances
    assert isinstance(instance, PipelineInstance)
    assert len(instance.pids) == 3 and all(psutil.pid_exists(pid) for pid in instance.pids)
    np.testing.assert_allclose(await embed_all(gateway), expected[:-1], atol=1e-5)


def stage_of(pid: int) -> tuple[int, str]:
    """(stage index, the endpoint it reads) of a stage process, from its command line."""
    args = psutil.Process(pid).cmdline()
    return int(args[args.index("--stage") + 1]), args[args.index("--pull") + 1]


async def post_all(url: str, texts: list[str]) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=120) as client:
        return await asyncio.gather(
            *(client.post(f"{url}/v2/models/minilm/infer", json=kserve(text)) for text in texts)
        )


def kserve(*texts: str) -> dict[str, object]:
    return {"inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}]}


def embeddings(responses: list[httpx.Response]) -> np.ndarray:
    assert [r.status_code for r in responses] == [200] * len(responses), responses[0].text
    return np.concatenate(
        [
            np.array(r.json()["outputs"][0]["data"], dtype=np.float32).reshape(-1, 384)
            for r in responses
        ]
    )


def test_served_two_stage_instances_match_the_model_and_fail_over(
    tmp_path: Path, expected: np.ndarray
) -> None:
    server = Server(
        "--admin-loopback",
        "--model",
        "minilm:torch",
        "--pipeline-stages",
        "2",
        "--instances",
        "2",
        "--threads",
        "1",
        "--max-batch",
        "8",
        log=tmp_path / "server.log",
    ).wait_ready()
    try:
        pids = server.worker_pids()
        assert len(pids) == 4  # two instances of two stage processes each
        rows = httpx.get(f"{server.url}/admin/instances").json()
        assert sorted(row["pid"] for row in rows) == sorted(p for p in pids if stage_of(p)[0] == 0)
        # One request of three items, a 5,000-word text among them.
        response = httpx.post(
            f"{server.url}/v2/models/minilm/infer", json=kserve(*ITEMS[-2:], LONG)
        )
        np.testing.assert_allclose(embeddings([response]), expected[-3:], atol=1e-5)
        np.testing.assert_allclose(
            embeddings(asyncio.run(post_all(server.url, ITEMS))), expected[:-1], atol=1e-5
        )

        # Kill the last stage of one instance under load: nothing is lost, the whole instance
        # (its stage 0 too) is replaced by a fresh pair of stages.
        victim = next(p for p in pids if stage_of(p)[0] == 1)
        victim_pull = stage_of(victim)[1]
        sibling = next(
            p
            for p in pids
            if p != victim
            and stage_of(p)[1].rsplit("-stage", 1)[0] == victim_pull.rsplit("-stage", 1)[0]
        )

        async def kill_under_load() -> list[httpx.Response]:
            load = asyncio.ensure_future(post_all(server.url, SHORT * 3))
            await asyncio.sleep(0.3)
            os.kill(victim, signal.SIGKILL)
            return await load

        np.testing.assert_allclose(
            embeddings(asyncio.run(kill_under_load())),
            np.concatenate([expected[: len(SHORT)]] * 3),
            atol=1e-5,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            rows = httpx.get(f"{server.url}/admin/instances").json()
            if len(rows) == 2 and all(row["state"] == "ready" for row in rows):
                break
            time.sleep(0.2)
        assert [row["state"] for row in rows] == ["ready", "ready"]
        assert not psutil.pid_exists(sibling)  # killed with the stage that died
        fresh = set(server.worker_pids()) - set(pids)
        assert len(fresh) == 2 and len(server.worker_pids()) == 4
    finally:
        stage_pids = server.worker_pids()
        assert server.stop() == 0
    assert not any(psutil.pid_exists(pid) for pid in stage_pids)
