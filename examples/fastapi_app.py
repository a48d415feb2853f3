"""dlproxy inside an existing FastAPI app: its routes under /ml, its lifespan run by the app's.

    pip install fastapi uvicorn
    uvicorn examples.fastapi_app:api --port 8080
    curl -s localhost:8080/ml/v2/models/echo/infer -d '{"inputs": [{"name": "x",
      "shape": [1], "datatype": "INT64", "data": [7]}]}'
"""

from __future__ import annotations

from fastapi import FastAPI

import dlproxy

proxy = dlproxy.create_app(models=["echo"], instances=1, threads=1)
api = FastAPI(lifespan=proxy.lifespan)  # FastAPI does not run a mounted app's lifespan itself
api.mount("/ml", proxy)


@api.get("/hello")
def hello() -> dict[str, str]:
    return {"hello": "from the app around dlproxy"}
