"""One configuration source: the serve flags, DLPROXY_* variables, config-file keys and
docs/configuration.md all come from Settings; `dlproxy config` prints what they amount to; every
configuration error is one line naming the setting, exit 2."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from dlproxy import __version__, configuration
from dlproxy.cli import build_parser, main
from dlproxy.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def parsed(*flags: str) -> Settings:
    return configuration.load(build_parser().parse_args(["serve", *flags]))


def test_the_configuration_reference_is_up_to_date() -> None:
    written = (REPO / "docs" / "configuration.md").read_text()
    assert written == configuration.reference(), (
        "docs/configuration.md is stale: run `dlproxy config --reference > docs/configuration.md`"
    )


def test_every_setting_has_a_flag_a_variable_a_meaning_and_a_row() -> None:
    parser = build_parser()
    serve = next(a for a in parser._actions if a.dest == "command").choices["serve"]  # type: ignore[attr-defined]
    flags = {action.dest: action for action in serve._actions}
    document = configuration.reference()
    for name, field in Settings.model_fields.items():
        assert field.description, f"setting {name} has no docstring"
        assert f"`{configuration.env_name(name)}`" in document
        if name in configuration.INTERNAL:
            continue
        assert name in flags, f"setting {name} has no flag"
        assert flags[name].help and "default:" in flags[name].help


def test_every_commands_help_can_be_shown() -> None:
    """argparse formats help text with %: a setting's docstring with "10%" once broke
    ``dlproxy serve --help``."""
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices  # type: ignore[attr-defined]
    for name, command in commands.items():
        assert command.format_help(), name
    assert "--borrow-threads" in commands["serve"].format_help()


@pytest.mark.parametrize(
    ("flags", "file", "env", "name", "want"),
    [
        (["--max-batch", "8"], {"max_batch": 8}, {"DLPROXY_MAX_BATCH": "8"}, "max_batch", 8),
        (["--no-coalesce"], {"coalesce": False}, {"DLPROXY_COALESCE": "false"}, "coalesce", False),
        (["--access-log"], {"access_log": True}, {"DLPROXY_ACCESS_LOG": "1"}, "access_log", True),
        (
            ["--model", "echo", "--model", "minilm:fp32"],
            {"models": ["echo", "minilm:fp32"]},
            {"DLPROXY_MODELS": '["echo", "minilm:fp32"]'},
            "models",
            ["echo", "minilm:fp32"],
        ),
        (
            ["--batching", "adaptive", "--slo-ms", "50"],
            {"batching": "adaptive", "slo_ms": 50},
            {"DLPROXY_BATCHING": "adaptive", "DLPROXY_SLO_MS": "50"},
            "batching",
            "adaptive",
        ),
        (
            ["--scale-option", "target=4"],
            {"scale_options": {"target": 4}},
            {"DLPROXY_SCALE_OPTIONS": '{"target": 4}'},
            "scale_options",
            {"target": 4.0},
        ),
        (
            ["--weights", "3,1"],
            {"weights": [3, 1]},
            {"DLPROXY_WEIGHTS": "[3, 1]"},
            "weights",
            [3.0, 1.0],
        ),
        (
            ["--memory-budget", "1GiB", "--model-repository", "/tmp"],
            {"memory_budget": "1GiB", "model_repository": "/tmp"},
            {"DLPROXY_MEMORY_BUDGET": "1GiB", "DLPROXY_MODEL_REPOSITORY": "/tmp"},
            "memory_budget",
            1 << 30,
        ),
    ],
)
def test_a_flag_a_file_key_and_a_variable_set_the_same_setting(
    flags: list[str],
    file: dict[str, object],
    env: dict[str, str],
    name: str,
    want: object,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert getattr(parsed(*flags), name) == want
    config = tmp_path / "c.json"
    config.write_text(__import__("json").dumps(file))
    assert getattr(parsed("--config", str(config)), name) == want
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert getattr(parsed(), name) == want


def test_flags_beat_the_file_which_beats_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DLPROXY_MAX_BATCH", "4")
    monkeypatch.setenv("DLPROXY_MAX_QUEUE", "40")
    monkeypatch.setenv("DLPROXY_PORT", "9001")
    config = tmp_path / "c.toml"
    config.write_text("max_batch = 8\nmax_queue = 80\n")
    settings = parsed("--config", str(config), "--max-batch", "16")
    assert (settings.max_batch, settings.max_queue, settings.port) == (16, 80, 9001)


def test_dlproxy_config_prints_toml_that_gives_the_same_settings_back(
    capsys: pytest.CaptureFixture[str],
) -> None:
    flags = [
        "--model",
        "echo",
        "--max-batch",
        "8",
        "--admin-token",
        "s3cret-token",
        "--cache",
        "lru",
    ]
    assert main(["config", *flags]) == 0
    out = capsys.readouterr().out
    assert "s3cret-token" not in out and 'admin_token = "********"' in out
    table = tomllib.loads(out)
    table.pop("admin_token")
    again = Settings(**table)
    want = parsed(*flags).resolved()
    assert again.model_dump(exclude={"admin_token"}) == want.model_dump(exclude={"admin_token"})


def test_the_example_config_file_is_valid() -> None:
    settings = parsed("--config", str(REPO / "examples" / "dlproxy.toml"))
    assert settings.forwarded_allow_ips == ["10.0.0.0/8"] and settings.admin_port == 9000


@pytest.mark.parametrize(
    ("argv", "env", "says"),
    [
        (["serve", "--policy", "nope"], {}, "policy (--policy): unknown scheduling policy 'nope'"),
        (["serve", "--cache", "nope"], {}, "cache (--cache): unknown cache policy"),
        (["serve", "--autoscale", "nope"], {}, "autoscale (--autoscale): unknown scaling policy"),
        (["serve", "--max-batch", "many"], {}, "argument --max-batch: invalid int value"),
        (["serve", "--scale-option", "target"], {}, "a scaling option is KEY=NUMBER"),
        (["serve", "--config", "/no/such/file.toml"], {}, "--config /no/such/file.toml"),
        (["serve"], {"DLPROXY_MODELS": "minilm"}, "DLPROXY_MODELS does not parse"),
        (["serve", "--memory-budget", "lots"], {}, "'lots' is not a size"),
        (["serve", "--forwarded-allow-ips", "proxy.local"], {}, "not an IP address or network"),
        (["config", "--log-level", "loud"], {}, "unknown log level 'loud'"),
    ],
)
def test_a_configuration_error_is_one_line_naming_the_setting_and_exit_2(
    argv: list[str],
    env: dict[str, str],
    says: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit) as exited:
        code = main(argv)
        raise SystemExit(code)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1, err


def test_a_bad_toml_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("max_batch = [\n")
    assert main(["serve", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"--config {bad}" in err and len(err.strip().splitlines()) == 1


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"dlproxy {__version__}"
