"""``dlproxy serve --model digits:student`` over KServe v2: right answers, clear 400s.

The student is distilled inside the worker at first use when the cache has none, so this also
covers that path (a few seconds, once per cache directory).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import orjson
import pytest

from dlproxy.models.builtin import digits
from serving import Server

SPLIT = digits.load_split()


@pytest.fixture(scope="module")
def student_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("digits") / "server.log"
    server = Server(
        "--model", "digits:student", "--instances", "1", "--threads", "1", log=log
    ).wait_ready()
    yield server
    server.stop()


def infer(server: Server, inputs: list[dict[str, object]]) -> httpx.Response:
    body = orjson.dumps({"inputs": inputs})
    return httpx.post(f"{server.url}/v2/models/digits/infer", content=body, timeout=30)


def image_input(images: np.ndarray, datatype: str = "FP32") -> dict[str, object]:
    return {
        "name": "image",
        "shape": list(images.shape),
        "datatype": datatype,
        "data": images.ravel().tolist(),
    }


@pytest.mark.slow
def test_metadata_names_the_variant_and_tensors(student_server: Server) -> None:
    metadata = httpx.get(f"{student_server.url}/v2/models/digits", timeout=10).json()
    assert "student" in str(metadata)
    assert metadata["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 64]}]


@pytest.mark.slow
def test_the_served_student_labels_test_images(student_server: Server) -> None:
    images, labels = SPLIT.test_images[:100], SPLIT.test_labels[:100]
    response = infer(student_server, [image_input(images)])
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    probabilities = np.array(outputs["probabilities"]["data"]).reshape(
        outputs["probabilities"]["shape"]
    )
    assert (outputs["probabilities"]["datatype"], outputs["label"]["datatype"]) == ("FP32", "INT64")
    assert probabilities.shape == (100, 10)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    predicted = np.array(outputs["label"]["data"])
    assert (predicted == labels).mean() >= 0.95


@pytest.mark.slow
@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([image_input(np.zeros((2, 63), np.float32))], "shape [2, 63]"),
        ([image_input(np.zeros((2, 64), np.int32), "INT32")], "must be FP32"),
        ([{**image_input(np.zeros((1, 64), np.float32)), "name": "pixels"}], "missing input"),
    ],
    ids=["wrong shape", "wrong datatype", "wrong name"],
)
def test_bad_input_is_a_clear_400(
    student_server: Server, inputs: list[dict[str, object]], message: str
) -> None:
    response = infer(student_server, inputs)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]
