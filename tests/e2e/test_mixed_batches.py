"""#16 item 1 on a real worker: echo declares no inputs, so requests of any names and shapes reach
its queue together; each is batched only with compatible ones and every one is answered with its
own data (before, one concatenation error answered the trigger 500 and left the others hanging)."""

from __future__ import annotations

import asyncio

import httpx

from serving import Server


async def ask(client: httpx.AsyncClient, url: str, name: str, rows: list[list[int]]) -> list[int]:
    body = {
        "inputs": [
            {"name": name, "shape": [len(rows), len(rows[0])], "datatype": "INT64", "data": rows}
        ],
        "parameters": {"delay_ms": 5},  # the instance is busy: the others queue together
    }
    answer = await client.post(f"{url}/v2/models/echo/infer", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    (output,) = answer.json()["outputs"]
    assert output["name"] == name and output["shape"] == [len(rows), len(rows[0])]
    return list(output["data"])


def test_requests_of_every_shape_in_one_queue_are_each_answered(echo_server: Server) -> None:
    async def run() -> None:
        async with httpx.AsyncClient() as client:
            shapes = [("x", [[i]]) for i in range(10)]
            shapes += [("x", [[i, i + 1, i + 2]]) for i in range(10)]
            shapes += [("z", [[i, i]]) for i in range(10)]
            answers = await asyncio.wait_for(
                asyncio.gather(*(ask(client, echo_server.url, n, r) for n, r in shapes)), 60
            )
            for (_, rows), data in zip(shapes, answers, strict=True):
                assert data == [v for row in rows for v in row]

    asyncio.run(run())
