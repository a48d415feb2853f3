"""The route table is the one list of routes: Starlette, the hot path, auth and the OpenAPI
document all follow it."""

from __future__ import annotations

import pytest
from starlette.routing import Route

from dlproxy.gateway import Gateway, Limits
from dlproxy.http import openapi, table
from dlproxy.http.auth import Authenticator
from dlproxy.http.routes import build_starlette
from dlproxy.metrics import RequestMetrics


def test_starlette_and_the_document_have_exactly_the_routes_of_the_table() -> None:
    app = build_starlette(Gateway([], Limits()), RequestMetrics(), Authenticator())
    served = {
        (route.path, method)
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }
    listed = {(e.path, e.method) for e in table.ENDPOINTS}
    assert served == listed
    paths = openapi.document(["m"])["paths"]
    documented = {(path, method.upper()) for path, item in paths.items() for method in item}
    assert documented == listed


@pytest.mark.parametrize(
    ("path", "found"),
    [
        ("/v2/models/minilm/infer", ("kserve", "minilm")),
        ("/v2/models/minilm/versions/3/infer", ("kserve", "minilm")),
        ("/v1/embeddings", ("openai", "")),
        ("/v2/models/minilm/ready", None),
        ("/v2/models/a/b/infer", None),
    ],
)
def test_the_hot_path_finds_the_inference_routes_and_their_model(
    path: str, found: tuple[str, str] | None
) -> None:
    match = table.hot(path)
    assert (None if match is None else (match[0].protocol, match[1])) == found
    if path.endswith("/versions/3/infer"):
        assert match is not None and match[2] == "3"


def test_every_schema_is_used_and_every_reference_resolves() -> None:
    document = openapi.document(["m"])
    schemas = document["components"]["schemas"]
    text = str(document["paths"]) + str(schemas)
    for name in schemas:
        assert f"#/components/schemas/{name}" in text, name
    for reference in (part.split("'")[0] for part in text.split("#/components/schemas/")[1:]):
        assert reference in schemas, reference
