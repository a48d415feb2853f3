"""Served minilm (the default variant): a sentence's embedding is the same alone and when it
shares a batch with other clients' sentences and a long text."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import numpy as np
import pytest

from dlproxy.models.builtin.corpus import sentences
from serving import Server

pytestmark = pytest.mark.slow


def embedding(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.array(response.json()["data"][0]["embedding"], dtype=np.float32)


async def burst(url: str, texts: list[str]) -> list[httpx.Response]:
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=len(texts)), timeout=120) as c:
        return await asyncio.gather(
            *(c.post(f"{url}/v1/embeddings", json={"model": "minilm", "input": t}) for t in texts)
        )


def mean_batch_size(url: str) -> float:
    metrics = httpx.get(f"{url}/metrics").text
    total = float(
        re.search(r'dlproxy_batch_size_sum\{model="minilm",version=""\} (\S+)', metrics)[1]
    )  # type: ignore[index]
    count = float(
        re.search(r'dlproxy_batch_size_count\{model="minilm",version=""\} (\S+)', metrics)[1]
    )  # type: ignore[index]
    return total / count


def test_a_sentence_gets_the_same_embedding_alone_and_in_a_shared_batch(tmp_path: Path) -> None:
    server = Server(
        *("--model", "minilm", "--instances", "1", "--threads", "1", "--max-delay-ms", "50"),
        log=tmp_path / "server.log",
    ).wait_ready()
    try:
        sentence = "The same request must get the same numbers, whatever else is in flight."
        alone = embedding(
            httpx.post(f"{server.url}/v1/embeddings", json={"model": "minilm", "input": sentence})
        )
        others = [*sentences()[:30], " ".join(sentences()[:40])]  # a long, chunked text too
        responses = asyncio.run(burst(server.url, [*others, sentence, *others[::-1]]))
        shared = embedding(responses[len(others)])
        assert mean_batch_size(server.url) > 2  # the burst really was batched together
        assert float(np.abs(shared - alone).max()) <= 1e-5
        assert all(r.status_code == 200 for r in responses)
    finally:
        server.stop()
