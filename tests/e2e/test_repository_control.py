"""The KServe v2 repository extension driven by the unmodified tritonclient: index, load and
unload at run time; a reload swaps versions under load without a failed request; a version that
fails to load leaves the previous one serving; unloading answers 404 at once."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from serving import Server, metric_samples


def version(root: Path, name: str, number: str, model: str = "echo") -> Path:
    folder = root / name / number
    folder.mkdir(parents=True)
    (folder / "model.json").write_text(json.dumps({"model": model}))
    return folder


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("control")
    version(root, "swap", "1")
    version(root, "other", "1")
    (root / "broken").mkdir()
    return root


@pytest.fixture(scope="module")
def server(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("control-server") / "server.log"
    running = Server(
        "--admin-loopback",
        *("--model-repository", str(repository), "--instances", "1", "--threads", "1"),
        log=log,
    )
    yield running.wait_ready()
    # A version that failed to start must not leave a socket that blocks the shutdown.
    assert running.stop(timeout=20) == 0


def client(server: Server) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(server.url.removeprefix("http://"))


def infer(server: Server, model: str) -> httpx.Response:
    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "INT64", "data": [7]}]}
    return httpx.post(f"{server.url}/v2/models/{model}/infer", json=body, timeout=30)


def states(server: Server) -> dict[str, tuple[str, str, str]]:
    return {
        row["name"]: (row.get("version", ""), row["state"], row.get("reason", ""))
        for row in client(server).get_model_repository_index()
    }


def test_the_index_lists_every_model_with_its_state(server: Server) -> None:
    index = states(server)
    assert index["swap"][:2] == ("1", "READY") and index["other"][:2] == ("1", "READY")
    assert index["broken"][1] == "UNAVAILABLE" and "has no version folder" in index["broken"][2]


def test_a_reload_under_load_swaps_versions_without_a_failed_request(
    server: Server, repository: Path
) -> None:
    version(repository, "swap", "2")
    statuses: list[int] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=30) as http:
            body = {"inputs": [{"name": "x", "shape": [1], "datatype": "INT64", "data": [1]}]}
            while not stop.is_set():
                statuses.append(
                    http.post(f"{server.url}/v2/models/swap/infer", json=body).status_code
                )

    traffic = [threading.Thread(target=load) for _ in range(4)]
    for thread in traffic:
        thread.start()
    try:
        client(server).load_model("swap")
    finally:
        stop.set()
        for thread in traffic:
            thread.join()
    assert statuses and set(statuses) == {200}
    assert infer(server, "swap").json()["model_version"] == "2"
    assert states(server)["swap"][:2] == ("2", "READY")


def test_a_version_that_fails_to_load_leaves_the_previous_one_serving(
    server: Server, repository: Path
) -> None:
    broken = repository / "other" / "2"
    broken.mkdir()
    (broken / "model.onnx").write_bytes(b"not an onnx graph")
    with pytest.raises(InferenceServerException, match="failed to load"):
        client(server).load_model("other")
    assert infer(server, "other").json()["model_version"] == "1"


def test_unload_answers_404_at_once_and_load_brings_it_back(server: Server) -> None:
    client(server).unload_model("swap")
    gone = infer(server, "swap")
    assert gone.status_code == 404 and "not served here" in gone.json()["error"]
    assert states(server)["swap"] == ("", "UNAVAILABLE", "unloaded")
    client(server).load_model("swap")
    assert infer(server, "swap").status_code == 200


def test_unknown_models_and_names_outside_the_repository_are_refused(server: Server) -> None:
    with pytest.raises(InferenceServerException, match="not in the repository"):
        client(server).load_model("nope")
    escaped = httpx.post(f"{server.url}/v2/repository/models/..%2Fetc/load", timeout=10)
    assert escaped.status_code in (400, 404)
    with pytest.raises(InferenceServerException, match="not loaded"):
        client(server).unload_model("nope")


def test_polling_reloads_a_changed_model_and_unloads_a_removed_one(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    import shutil
    import time

    version(tmp_path, "polled", "1")
    version(tmp_path, "doomed", "1")
    log = tmp_path_factory.mktemp("poll-server") / "server.log"
    running = Server(
        "--admin-loopback",
        *("--model-repository", str(tmp_path), "--repository-poll-s", "0.2"),
        *("--instances", "1", "--threads", "1"),
        log=log,
    ).wait_ready()
    try:
        version(tmp_path, "polled", "2")
        shutil.rmtree(tmp_path / "doomed")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            answer = infer(running, "polled")
            if (
                answer.json().get("model_version") == "2"
                and infer(running, "doomed").status_code == 404
            ):
                break
            time.sleep(0.2)
        assert infer(running, "polled").json()["model_version"] == "2"
        assert infer(running, "doomed").status_code == 404
    finally:
        assert running.stop(timeout=20) == 0


def instances(server: Server, model: str) -> dict[str, list[int]]:
    rows = httpx.get(f"{server.url}/admin/instances", timeout=10).json()
    pids: dict[str, list[int]] = {}
    for row in rows:
        if row["model"] == model:
            pids.setdefault(row["version"], []).append(row["pid"])
    return pids


def test_a_canary_split_and_a_shadow_apply_on_load_and_unchanged_versions_keep_running(
    server: Server, repository: Path
) -> None:
    for number in ("1", "2", "3"):
        version(repository, "canary", number)
    config = repository / "canary" / "config.json"
    config.write_text(json.dumps({"version_policy": {"all": True}, "default_version": "1"}))
    client(server).load_model("canary")
    assert {infer(server, "canary").json()["model_version"] for _ in range(10)} == {"1"}
    before = instances(server, "canary")
    config.write_text(
        json.dumps(
            {
                "version_policy": {"all": True},
                "default_version": "1",
                "traffic": {"1": 50, "2": 50},
                "shadow": {"version": "3", "percent": 100},
            }
        )
    )
    client(server).load_model("canary")
    assert instances(server, "canary") == before  # only the split changed: nothing restarted
    answered = {infer(server, "canary").json()["model_version"] for _ in range(40)}
    assert answered == {"1", "2"}
    pinned = httpx.post(
        f"{server.url}/v2/models/canary/versions/3/infer",
        json={"inputs": [{"name": "x", "shape": [1], "datatype": "INT64", "data": [1]}]},
        timeout=30,
    )
    assert pinned.json()["model_version"] == "3"
    shadow: dict[str, object] = {}
    for _ in range(100):  # the copies are computed off the requests' path
        shadow = httpx.get(f"{server.url}/stats", timeout=10).json()["shadow"].get("canary/3", {})
        if shadow.get("compared") == 40:
            break
        threading.Event().wait(0.05)
    assert shadow["compared"] == 40 and shadow["errors"] == 0
    assert shadow["similarity_min"] == 1.0  # echo: the same answer on every version
    samples = metric_samples(f"{server.url}/metrics")
    shadow_key = (("model", "canary"), ("result", "compared"), ("version", "3"))
    assert samples["dlproxy_shadow_requests_total", shadow_key] == 40
    assert samples["dlproxy_traffic_weight", (("model", "canary"), ("version", "2"))] == 0.5
    answered_by_2 = (("code", "200"), ("model", "canary"), ("protocol", "kserve"), ("version", "2"))
    assert samples["dlproxy_requests_total", answered_by_2] >= 1


def test_a_class_that_raises_in_load_is_reported_with_its_reason(
    server: Server, repository: Path
) -> None:
    good = version(repository, "coded", "1")
    assert good.is_dir()
    client(server).load_model("coded")
    bad = repository / "coded" / "2"
    bad.mkdir()
    (bad / "model.py").write_text(
        "class Broken:\n"
        "    def load(self):\n"
        "        raise ValueError('weights.bin is missing')\n"
        "    def predict(self, batch):\n"
        "        return batch\n"
    )
    (bad / "model.json").write_text(json.dumps({"model": "model:Broken"}))
    with pytest.raises(InferenceServerException, match=r"weights\.bin is missing"):
        client(server).load_model("coded")
    rows = [row for row in client(server).get_model_repository_index() if row["name"] == "coded"]
    assert {(r["version"], r["state"]) for r in rows} == {("1", "READY"), ("2", "UNAVAILABLE")}
    assert any("ValueError: weights.bin is missing" in r.get("reason", "") for r in rows)
    assert infer(server, "coded").json()["model_version"] == "1"  # the previous one serves
    assert httpx.get(f"{server.url}/v2/health/live", timeout=10).status_code == 200
