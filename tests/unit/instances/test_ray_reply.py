"""A Ray actor's reply is decoded in a callback: a reply that cannot be read must still answer."""

from __future__ import annotations

import asyncio

import pytest

from dlproxy.batching.policy import FixedBatching
from dlproxy.errors import ModelError
from dlproxy.instances.base import InstanceOptions

ray_instances = pytest.importorskip("dlproxy.instances.ray")


async def test_an_undecodable_actor_reply_fails_its_batch_with_an_error_naming_the_model() -> None:
    options = InstanceOptions(max_queue_items=10, batching=lambda: FixedBatching(8, 0.001))
    instance = ray_instances.RayInstance("minilm", options, threads=1)
    loop = asyncio.get_running_loop()
    batch: asyncio.Future[object] = loop.create_future()
    call: asyncio.Future[bytes] = loop.create_future()
    call.set_result(b"\xc1 not a message")
    instance._settle(batch, call)
    assert batch.done()
    with pytest.raises(ModelError, match=r"'minilm'.*could not be decoded"):
        batch.result()
