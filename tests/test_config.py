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
        if f.name in ("path", "warnings"):  # not settings: where it came from, what it lacks
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
        ("[encode]\ndefault_profile = 'x'\n", "encode.default_profile: expected one of ['web', "),
        (
            "[encode.profiles.bad]\nargs = ['-o', '/etc/passwd']\n",
            "encode.profiles.bad.args: -o is set by vidd itself",
        ),
        (  # getopt reads -i/x as -i /x, and --inp as --input: HandBrake would open /x
            "[encode.profiles.bad]\nargs = ['-e', 'x264', '-i/etc/passwd']\n",
            "encode.profiles.bad.args: -i/etc/passwd is set by vidd itself",
        ),
        (
            "[encode.profiles.bad]\nargs = ['--inp', '/etc/passwd']\n",
            "encode.profiles.bad.args: --inp is set by vidd itself",
        ),
        ("[encode.profiles.empty]\n", "encode.profiles.empty: expected args or preset"),
        ("[web]\nport = 70000\n", "web.port: expected 1-65535"),
        ("[web\n", "not valid TOML"),
        ("[watch]\nstable_seconds = nan\n", "watch.stable_seconds: expected a finite number"),
        ("[encode]\nstall_timeout_s = inf\n", "encode.stall_timeout_s: expected a finite"),
        ("[daemon]\nshutdown_timeout_s = -inf\n", "daemon.shutdown_timeout_s: expected a fin"),
        ("[encode]\nmax_parallel = 100000\n", "encode.max_parallel: expected at most 64, got"),
        ("[encode]\nstall_timeout_s = 86401\n", "encode.stall_timeout_s: expected at most 86400"),
        ("[encode]\nkill_grace_s = 1e9\n", "encode.kill_grace_s: expected at most 600"),
        ("[encode]\nlog_tail_lines = 10001\n", "encode.log_tail_lines: expected at most 10000"),
        ("[encode]\nnice_step = 20\n", "encode.nice_step: expected at most 19"),
        ("[watch]\nrescan_seconds = 1e300\n", "watch.rescan_seconds: expected at most 86400"),
        ("[web]\nmax_ws_clients = 100001\n", "web.max_ws_clients: expected at most 100000"),
        (
            "[web]\nmax_upload_bytes = 9223372036854775807\n",
            "web.max_upload_bytes: expected at most 1152921504606846976",
        ),
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


def test_the_largest_sane_values_pass(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        "[encode]\nmax_parallel = 64\nstall_timeout_s = 86400\nlog_tail_lines = 10000\n"
        "[web]\nmax_ws_clients = 100000\n[daemon]\nshutdown_timeout_s = 86400.0\n"
    )
    cfg = config.load(path)
    assert cfg.encode.max_parallel == 64 and cfg.web.max_ws_clients == 100000


def test_a_missing_ffmpeg_is_a_warning_not_an_error(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[encode]\nffmpeg = "no-such-ffmpeg"\n')
    cfg = config.load(path)
    assert cfg.encode.ffmpeg == ""  # no posters
    (warning,) = cfg.warnings
    assert warning.startswith(str(path)) and "encode.ffmpeg" in warning
    assert "no-such-ffmpeg" in warning and "poster" in warning and "\n" not in warning
    path.write_text('[encode]\nffmpeg = ""\n')  # posters turned off on purpose
    assert config.load(path).warnings == ()
    assert config.load(ROOT / "config.toml").warnings == ()  # this machine has ffmpeg
