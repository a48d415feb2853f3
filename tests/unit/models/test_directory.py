"""A ``dlproxy compress`` output folder: its ``dlproxy.json`` names a graph inside the folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dlproxy.models.directory import read_metadata


@pytest.mark.parametrize("file", ["../elsewhere.onnx", "/etc/passwd", "sub/../../up.onnx"])
def test_the_file_must_be_inside_the_folder(tmp_path: Path, file: str) -> None:
    (tmp_path / "dlproxy.json").write_text(json.dumps({"model": "m", "version": "1", "file": file}))
    with pytest.raises(ValueError, match="'file' must name a file in"):
        read_metadata(tmp_path)


def test_a_file_in_the_folder_or_below_is_read(tmp_path: Path) -> None:
    metadata = {"model": "m", "version": "1", "file": "graphs/model.onnx"}
    (tmp_path / "dlproxy.json").write_text(json.dumps(metadata))
    assert read_metadata(tmp_path)["file"] == "graphs/model.onnx"
