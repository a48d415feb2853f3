"""``dlproxy compress``: method parsing, clear errors, a servable directory, a measured report."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest

from dlproxy.cli import main
from dlproxy.compression.adapters import MiniLMAdapter, adapter_for
from dlproxy.compression.command import Method, apply, compress, parse_method
from dlproxy.models.builtin import minilm
from dlproxy.models.builtin.corpus import sentences
from dlproxy.models.registry import create_model, model_name

TEXTS = sentences()[2::40]


def as_bytes(texts: list[str]) -> np.ndarray:
    array = np.empty(len(texts), dtype=object)
    array[:] = [t.encode("utf-8") for t in texts]
    return array


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("int8", Method("int8")),
        ("int8-static", Method("int8-static")),
        ("int8-dynamic", Method("int8-dynamic")),
        ("fp16", Method("fp16")),
        ("prune:0.5", Method("prune", 0.5)),
        ("structured-prune:.25", Method("structured-prune", 0.25)),
    ],
)
def test_methods_parse(text: str, expected: Method) -> None:
    assert parse_method(text) == expected


def test_method_versions_have_no_colon() -> None:
    assert parse_method("structured-prune:0.25").version == "structured-prune-0.25"
    assert str(parse_method("prune:0.50")) == "prune:0.5"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("int4", "Unknown method 'int4': choose int8, int8-dynamic, int8-static, fp16, prune:AMOUNT"),
        ("prune", "needs the fraction to remove, e.g. prune:0.25"),
        ("prune:half", "needs the fraction to remove"),
        ("structured-prune:1.5", "must be between 0 and 1"),
        ("prune:0", "must be between 0 and 1"),
        ("int8:0.5", "takes no amount"),
    ],
)
def test_bad_methods_say_what_would_do(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_method(text)


def test_cli_refuses_a_bad_method_before_doing_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["compress", "minilm", "--method", "int3", "--out", str(tmp_path / "out")])
    assert exited.value.code == 2
    assert "argument --method: Unknown method 'int3': choose int8" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_refuses_a_model_it_cannot_compress(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["compress", "echo", "--method", "int8", "--out", str(tmp_path / "out")])
    assert code == 2
    assert "Cannot compress 'echo': choose one of" in capsys.readouterr().err
    with pytest.raises(ValueError, match="minilm"):
        adapter_for("resnet")


def test_quality_and_calibration_sentences_do_not_overlap() -> None:
    adapter = MiniLMAdapter()
    assert not set(adapter.calibration_texts) & set(adapter.quality_texts)
    assert len(adapter.calibration_texts) + len(adapter.quality_texts) == len(sentences())


@pytest.fixture(scope="module")
def int8_run(tmp_path_factory: pytest.TempPathFactory, dlproxy_home: Path) -> tuple[Path, dict]:
    """The whole command, in process: one timing round to stay quick."""
    out = tmp_path_factory.mktemp("int8") / "variant"
    report = out.parent / "report.json"
    args = ["compress", "minilm", "--method", "int8", "--out", str(out), "--rounds", "1"]
    assert main([*args, "--json", str(report)]) == 0
    return out, json.loads(report.read_text())


def test_int8_report_has_every_documented_key_and_meets_the_quality_bar(
    int8_run: tuple[Path, dict],
) -> None:
    out, report = int8_run
    assert set(report) == {
        *("model", "method", "out", "threads", "original", "compressed", "speedup"),
        *("size_ratio", "latency_ratio", "quality", "details", "batch_invariance", "seconds"),
    }
    assert (report["model"], report["method"], report["out"]) == ("minilm", "int8", str(out))
    for side in ("original", "compressed"):
        assert set(report[side]) == {"file_bytes", "throughput", "latency_p50_ms"}
        assert report[side]["throughput"] > 0 and report[side]["latency_p50_ms"] > 0
    assert report["original"]["file_bytes"] == minilm.onnx_path("fp32").stat().st_size
    assert report["compressed"]["file_bytes"] == (out / "model.onnx").stat().st_size
    assert report["size_ratio"] < 0.3
    assert report["quality"]["cosine_mean"] >= 0.99
    assert report["quality"]["cosine_min"] >= 0.97
    assert report["batch_invariance"]["invariant"] is True
    assert report["batch_invariance"]["max_difference"] <= 1e-5


def test_int8_dynamic_is_reported_as_batch_dependent(
    tmp_path: Path, dlproxy_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ONNX Runtime's dynamic int8 scales a batch as a whole: the report must say so."""
    out, report = tmp_path / "variant", tmp_path / "report.json"
    args = ["compress", "minilm", "--method", "int8-dynamic", "--out", str(out), "--rounds", "1"]
    assert main([*args, "--json", str(report)]) == 0
    invariance = json.loads(report.read_text())["batch_invariance"]
    assert invariance["invariant"] is False
    assert invariance["max_difference"] > 1e-5 >= invariance["original_max_difference"]
    assert "Not batch-invariant" in capsys.readouterr().out


def test_a_compressed_directory_serves_as_minilm(int8_run: tuple[Path, dict]) -> None:
    out, _ = int8_run
    metadata = json.loads((out / "dlproxy.json").read_text())
    assert (metadata["model"], metadata["version"], metadata["file"]) == (
        "minilm",
        "int8",
        "model.onnx",
    )
    for reference in (str(out), str(out / "model.onnx")):
        assert model_name(reference) == "minilm"
        model = create_model(reference, threads=1)
        model.load()
        assert (model.spec.name, model.spec.version) == ("minilm", "int8")
        got = model.predict({"text": as_bytes(TEXTS)}, {})["embedding"]
        reference_model = create_model("minilm:fp32")
        reference_model.load()
        expected = reference_model.predict({"text": as_bytes(TEXTS)}, {})["embedding"]
        assert got.shape == (len(TEXTS), minilm.DIMENSION)
        assert (got * expected).sum(axis=1).mean() >= 0.99


def test_structured_pruning_writes_a_smaller_graph_with_smaller_matrices(
    tmp_path: Path, dlproxy_home: Path
) -> None:
    adapter = MiniLMAdapter()
    target = tmp_path / "model.onnx"
    details = apply(adapter, parse_method("structured-prune:0.5"), adapter.original_onnx(), target)
    graph = onnx.load(str(target)).graph
    widths = {d for init in graph.initializer if len(init.dims) == 2 for d in init.dims}
    assert 768 in widths and 1536 not in widths  # FFN 1536 -> 768 neurons
    assert 192 in widths  # Q, K, V: 12 -> 6 heads of 32
    saved = minilm.onnx_path("fp32").stat().st_size - target.stat().st_size
    removed = details["parameters_before"] - details["parameters_after"]
    assert removed == 6 * (6 * 4 * 32 * 384 + 6 * 3 * 32 + 768 * (2 * 384 + 1))
    assert saved == pytest.approx(4 * removed, rel=0.01)  # float32: 4 bytes a parameter
    assert (details["heads_per_layer"], details["fine_tuned"]) == ("12 -> 6", False)

    pruned = minilm._session(target, 1)
    feeds = minilm.tokenize(minilm.load_tokenizer(), TEXTS)
    got = pruned.run([minilm.GRAPH_OUTPUT], feeds)[0]
    expected = minilm._session(minilm.onnx_path("fp32"), 1).run([minilm.GRAPH_OUTPUT], feeds)[0]
    assert got.shape == (len(TEXTS), 384)
    assert 0.5 < (got * expected).sum(axis=1).mean() < 0.99  # a real loss: no fine-tuning


@pytest.fixture
def served(int8_run: tuple[Path, dict], tmp_path: Path) -> Iterator[str]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from serving import Server

    out, _ = int8_run
    server = Server(
        "--model", str(out), "--instances", "1", "--threads", "1", log=tmp_path / "log"
    ).wait_ready()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.mark.slow
def test_dlproxy_serve_answers_real_sentences_from_a_compressed_directory(served: str) -> None:
    import httpx

    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(TEXTS)], "data": TEXTS}]}
    reply = httpx.post(f"{served}/v2/models/minilm/infer", json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    output = reply.json()["outputs"][0]
    assert (output["name"], output["shape"]) == ("embedding", [len(TEXTS), 384])
    vectors = np.array(output["data"], dtype=np.float32).reshape(len(TEXTS), 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    metadata = httpx.get(f"{served}/v2/models/minilm", timeout=10).json()
    assert "int8" in json.dumps(metadata)


def test_digits_plugs_in_scored_by_accuracy_and_served_as_digits(
    tmp_path: Path, dlproxy_home: Path
) -> None:
    from dlproxy.models.builtin import digits

    report = compress(adapter_for("digits"), parse_method("int8-static"), tmp_path, rounds=1)
    assert set(report.quality) == {"accuracy", "original_accuracy"}
    assert report.quality["original_accuracy"] == pytest.approx(
        digits.test_accuracy(digits.onnx_path("teacher"))
    )
    assert report.quality["accuracy"] >= report.quality["original_accuracy"] - 2.0
    assert report.compressed.file_bytes < report.original.file_bytes
    model = create_model(str(tmp_path))
    model.load()
    assert (model.spec.name, model.spec.version) == ("digits", "int8-static")
    images = digits.load_split().test_images[:5]
    outputs = model.predict({"image": images}, {})
    assert outputs["probabilities"].shape == (5, 10) and outputs["label"].shape == (5,)


def test_structured_pruning_of_a_model_without_it_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], dlproxy_home: Path
) -> None:
    args = ["compress", "digits", "--method", "structured-prune:0.25", "--out", str(tmp_path)]
    assert main(args) == 2
    assert "Structured pruning is not available for 'digits'" in capsys.readouterr().err
