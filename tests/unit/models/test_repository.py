"""The model repository scan (models/repository.py): layout, version policies, per-model
settings, and every bad entry reported with its reason without stopping the others."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dlproxy.models.repository import Entry, scan


def version(root: Path, name: str, number: str, model: str | None = "echo") -> Path:
    folder = root / name / number
    folder.mkdir(parents=True)
    if model is not None:
        (folder / "model.json").write_text(json.dumps({"model": model}))
    return folder


def config(root: Path, name: str, **values: object) -> None:
    (root / name / "config.json").write_text(json.dumps(values))


def by_name(root: Path) -> dict[str, Entry]:
    return {entry.name: entry for entry in scan(root)}


def test_versions_are_numeric_folders_and_the_newest_is_served_by_default(tmp_path: Path) -> None:
    for number in ("1", "2", "10"):
        version(tmp_path, "m", number)
    (tmp_path / "m" / "notes").mkdir()  # not a version: ignored, as Triton does
    (entry,) = scan(tmp_path)
    assert [v.number for v in entry.versions] == ["1", "2", "10"]
    assert entry.served == ("10",) and entry.default == "10" and not entry.error
    assert entry.versions[0].reference == "echo"


@pytest.mark.parametrize(
    ("policy", "served"),
    [
        ({"latest": 2}, ("2", "3")),
        ({"all": True}, ("1", "2", "3")),
        ({"specific": ["3", "1"]}, ("1", "3")),
    ],
)
def test_version_policies(
    tmp_path: Path, policy: dict[str, object], served: tuple[str, ...]
) -> None:
    for number in ("1", "2", "3"):
        version(tmp_path, "m", number)
    config(tmp_path, "m", version_policy=policy, default_version="3", instances=1, max_batch=8)
    (entry,) = scan(tmp_path)
    assert entry.served == served and entry.default == "3"
    assert entry.settings == {"instances": 1, "max_batch": 8}


def test_what_a_version_folder_holds_becomes_a_reference(tmp_path: Path) -> None:
    onnx = version(tmp_path, "graph", "1", model=None)
    (onnx / "model.onnx").write_bytes(b"")
    compressed = version(tmp_path, "compressed", "1", model=None)
    (compressed / "dlproxy.json").write_text("{}")
    embedder = version(tmp_path, "embedder", "1", model=None)
    (embedder / "modules.json").write_text("[]")
    relative = version(tmp_path, "relative", "1", model="weights/model.onnx")
    entries = by_name(tmp_path)
    assert entries["graph"].versions[0].reference == str((onnx / "model.onnx").resolve())
    assert entries["compressed"].versions[0].reference == str(compressed)
    assert entries["embedder"].versions[0].reference == str(embedder)
    assert entries["relative"].versions[0].reference == str(
        (relative / "weights/model.onnx").resolve()
    )


def test_bad_entries_carry_their_reason_and_the_others_are_served(tmp_path: Path) -> None:
    version(tmp_path, "good", "1")
    (tmp_path / "no-versions").mkdir()
    version(tmp_path, "empty", "1", model=None)
    version(tmp_path, "bad-config", "1")
    config(tmp_path, "bad-config", redis="redis://x")
    version(tmp_path, "bad-policy", "1")
    config(tmp_path, "bad-policy", version_policy={"newest": 1})
    version(tmp_path, "half", "1", model=None)
    version(tmp_path, "half", "2")
    entries = by_name(tmp_path)
    assert entries["good"].served == ("1",)
    assert "has no version folder" in entries["no-versions"].error
    assert entries["empty"].served == ()
    assert "holds nothing to serve" in entries["empty"].versions[0].error
    assert "unknown key(s) ['redis']" in entries["bad-config"].error
    assert "version_policy" in entries["bad-policy"].error
    assert entries["half"].served == ("2",)  # the broken 1 is skipped


def test_nothing_outside_the_repository_is_read(tmp_path: Path) -> None:
    root, outside = tmp_path / "repo", tmp_path / "outside"
    root.mkdir()
    version(outside, "m", "1")
    (root / "linked").symlink_to(outside / "m")
    version(root, "dotdot", "1", model="../../../outside/m/1/model.onnx")
    inner = version(root, "inner-link", "1", model=None)
    (inner / "model.onnx").symlink_to(outside / "m" / "1" / "model.json")
    entries = by_name(root)
    assert "leads outside the model repository" in entries["linked"].error
    for name in ("dotdot", "inner-link"):
        assert "leads outside" in entries[name].versions[0].error
        assert entries[name].served == ()


def test_a_missing_repository_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is not a directory"):
        scan(tmp_path / "nope")


def test_a_config_splits_traffic_between_versions_and_names_a_shadow(tmp_path: Path) -> None:
    for number in ("1", "2", "3"):
        version(tmp_path, "m", number)
    config(
        tmp_path,
        "m",
        version_policy={"all": True},
        default_version="1",
        traffic={"1": 95, "2": 5},
        shadow={"version": "3", "percent": 10},
    )
    (entry,) = scan(tmp_path)
    assert entry.split is not None and not entry.error
    assert entry.split.weights == {"1": 95.0, "2": 5.0}
    assert entry.split.shadow == "3" and entry.split.shadow_share == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        (
            {"traffic": {"1": 50, "9": 50}},
            r"traffic names version\(s\) \['9'\] that are not served",
        ),
        ({"traffic": {"1": -1, "2": 5}}, "weights must be >= 0"),
        ({"traffic": {"1": "all"}}, "traffic must be"),
        ({"shadow": {"version": "2"}}, "shadow must be"),
        ({"shadow": {"version": "2", "percent": 150}}, "within 0..1"),
        ({"shadow": {"version": "7", "percent": 5}}, r"\['7'\] that are not served"),
    ],
)
def test_a_bad_split_is_reported_with_its_reason(
    tmp_path: Path, values: dict[str, object], reason: str
) -> None:
    for number in ("1", "2"):
        version(tmp_path, "m", number)
    config(tmp_path, "m", version_policy={"all": True}, **values)
    (entry,) = scan(tmp_path)
    assert re.search(reason, entry.error), entry.error


def test_a_model_may_turn_the_cache_off_but_not_choose_another_policy(tmp_path: Path) -> None:
    from dlproxy.assembly import entry_deployments
    from dlproxy.settings import Settings

    version(tmp_path, "off", "1")
    config(tmp_path, "off", cache="none")
    version(tmp_path, "other", "1")
    config(tmp_path, "other", cache="lfu")
    entries = by_name(tmp_path)
    server = Settings(cache="lru", models=[])
    (deployment,) = entry_deployments(entries["off"], server)
    assert deployment.cached is False
    with pytest.raises(ValueError, match="may turn the result cache off"):
        entry_deployments(entries["other"], server)
