"""The config: typed, checked, resolved, and the shipped config.toml documents every key."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import pytest

from testkit.daemon import run_vidd
from vidd import config

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_config_loads_with_the_web_profile() -> None:
    cfg = config.load(ROOT / "config.toml")
    assert cfg.encode.profiles["web"].handbrake_args() == [
        "-e",
        "x264",
        "-q",
        "22",
        "-r",
        "15",
        "-B",
        "96",
        "-O",
    ]
    assert cfg.web.host == "127.0.0.1" and cfg.web.port == 8080
    assert cfg.storage.data_dir == (ROOT / "var").resolve()
    assert cfg.storage.inbox_dir == cfg.storage.data_dir / "inbox"
    assert Path(cfg.encode.handbrake).is_absolute()


def _documented_keys(text: str) -> dict[str, bool]:
    """Each `key = value` of the file, by dotted name, and whether a comment explains it."""
    keys: dict[str, bool] = {}
    section = ""
    previous = ""
    for line in text.splitlines():
        stripped = line.strip()
        if m := re.fullmatch(r"\[([\w.]+)\]", stripped):
            section = m.group(1)
        elif m := re.match(r"(\w+)\s*=", stripped):
            keys[f"{section}.{m.group(1)}"] = previous.startswith("#") or "#" in line
        previous = stripped
    return keys


def _dataclass_keys(cls: type, prefix: str) -> set[str]:
    keys = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name == "path":
            continue
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            keys |= _dataclass_keys(hint, f.name)  # type: ignore[arg-type]
        elif f.name != "profiles":
            keys.add(f"{prefix}.{f.name}" if prefix else f.name)
    return keys


def test_every_setting_is_in_config_toml_with_a_comment() -> None:
    documented = _documented_keys((ROOT / "config.toml").read_text())
    settings = _dataclass_keys(config.Config, "")
    plain = {k for k in documented if not k.startswith("encode.profiles.")}
    assert plain == settings, "config.toml and the Config dataclasses disagree"
    undocumented = [k for k, has_comment in documented.items() if not has_comment]
    assert not undocumented, f"keys without a comment: {undocumented}"


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[web]\nport = 'x'\n", "web.port: expected an integer, got 'x'"),
        ("[web]\nprot = 1\n", "web.prot: unknown key"),
        ("[nope]\n", "nope: unknown section"),
        ("[watch]\nenabled = 1\n", "watch.enabled: expected true or false"),
        ("[encode]\nmax_parallel = 0\n", "encode.max_parallel: expected at least 1"),
        ("[encode]\nhandbrake = 'no-such-handbrake'\n", "encode.handbrake: expected an executable"),
        ("[encode]\ndefault_profile = 'x'\n", "encode.default_profile: expected one of ['web']"),
        (
            "[encode.profiles.bad]\nargs = ['-o', '/etc/passwd']\n",
            "encode.profiles.bad.args: -o is set by vidd itself",
        ),
        ("[encode.profiles.empty]\n", "encode.profiles.empty: expected args or preset"),
        ("[web]\nport = 70000\n", "web.port: expected 1-65535"),
        ("[web\n", "not valid TOML"),
    ],
)
def test_bad_config_is_one_line_naming_file_and_key(
    tmp_path: Path, toml: str, expected: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(toml)
    with pytest.raises(config.ConfigError) as e:
        config.load(path)
    message = str(e.value)
    assert message.startswith(str(path)), message
    assert expected in message
    assert "\n" not in message


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    path = tmp_path / "etc" / "config.toml"
    path.write_text('[storage]\ndata_dir = "../data"\ninbox = "drop"\n')
    cfg = config.load(path)
    assert cfg.storage.data_dir == tmp_path / "data"
    assert cfg.storage.inbox_dir == tmp_path / "etc" / "drop"


def test_a_preset_profile(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[encode.profiles.web]\npreset = "Fast 1080p30"\nargs = ["-O"]\n')
    cfg = config.load(path)
    assert cfg.encode.profiles["web"].handbrake_args() == ["--preset", "Fast 1080p30", "-O"]


def test_config_is_frozen() -> None:
    cfg = config.Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.web.port = 1  # type: ignore[misc]


def test_bad_config_makes_vidd_exit_2_without_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[encode]\nhandbrake = '/nonexistent/HandBrakeCLI'\n")
    result = run_vidd("serve", "--config", str(path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "encode.handbrake" in lines[0] and str(path) in lines[0]
