"""`vidd check-config`: one line per problem and exit 2 for a misspelt key (with the
nearest real one), a preset HandBrakeCLI does not have, a missing tool and a data folder
vidd can't write; `ok` and exit 0 for a good file. Presets are checked against the real
HandBrakeCLI's --preset-list."""

from __future__ import annotations

import json
import shutil

import pytest

from testkit.daemon import run_vidd, write_config
from vidd import checks

pytestmark = pytest.mark.skipif(
    shutil.which("HandBrakeCLI") is None, reason="HandBrakeCLI is not installed"
)


def check(path):
    return run_vidd("check-config", "--config", str(path), timeout=90)


def problems(r):
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.splitlines()
    assert all(line.startswith("vidd: ") for line in lines), lines
    return lines


def test_a_good_config_is_ok(tmp_path):
    path = write_config(
        tmp_path,
        '[encode.profiles.fast]\npreset = "Very Fast 720p30"\n'
        '[encode.profiles.general]\nargs = ["--preset=General/Fast 1080p30", "-q", "24"]\n',
        encode={"default_profile": "fast"},
    )
    r = check(path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{path}: ok\n" and r.stderr == ""


def test_misspelt_keys_get_the_nearest_one(tmp_path):
    path = write_config(
        tmp_path,
        "[encode.profiles.web]\nargs = ['-q', '22']\ndescripton = 'x'\n",
        encode={"max_paralel": 2},
        web={"max_parallel": 3},
    )
    lines = problems(check(path))
    assert f"vidd: {path}: encode.max_paralel: unknown key; did you mean `max_parallel`?" in lines
    # a key in the wrong section: the section it belongs to
    assert f"vidd: {path}: web.max_parallel: unknown key; did you mean `encode.max_parallel`?" in (
        lines
    )
    assert any(
        "encode.profiles.web.descripton: unknown key; did you mean `description`" in x
        for x in lines
    )
    assert len(lines) == 3, lines  # every typo, once; the rest of the file is fine


def test_unknown_section_and_a_word_far_from_any(tmp_path):
    path = write_config(tmp_path, "[storag]\ndata_dir = 'x'\n", web={"zzz": 1})
    lines = problems(check(path))
    assert any("storag: unknown section; did you mean `storage`?" in x for x in lines)
    assert any(x.endswith("web.zzz: unknown key") for x in lines), lines


def test_missing_presets_are_named(tmp_path):
    path = write_config(
        tmp_path,
        '[encode.profiles.fast]\npreset = "Very Fast 720p31"\n'
        '[encode.profiles.other]\nargs = ["-Z", "No Such Preset"]\n',
        encode={"default_profile": "fast"},
    )
    lines = problems(check(path))
    assert any(
        "encode.profiles.fast: HandBrakeCLI has no preset 'Very Fast 720p31'; did you mean "
        "`Very Fast 720p30`?" in x
        for x in lines
    ), lines
    assert any(
        "encode.profiles.other: HandBrakeCLI has no preset 'No Such Preset'" in x for x in lines
    )
    assert len(lines) == 2


def test_missing_tools(tmp_path):
    path = write_config(tmp_path, encode={"handbrake": "no-such-handbrake", "ffmpeg": "no-ffmpeg"})
    lines = problems(check(path))
    assert any("encode.handbrake: 'no-such-handbrake' was not found" in x for x in lines)
    assert any("encode.ffmpeg: 'no-ffmpeg' was not found" in x for x in lines)
    # posters off on purpose is no problem
    path = write_config(tmp_path, encode={"ffmpeg": ""})
    assert check(path).returncode == 0


def test_a_data_dir_vidd_cannot_write(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the data folder should be\n")
    path = write_config(tmp_path, storage={"data_dir": str(blocker / "var")})
    lines = problems(check(path))
    assert any(
        f"storage.data_dir: vidd can't write to {blocker / 'var'}: {blocker} is not a folder" in x
        for x in lines
    ), lines
    path = write_config(tmp_path, storage={"output_dir": str(blocker / "published")})
    (line,) = problems(check(path))
    assert "storage.output_dir: vidd can't write to" in line and "is not a folder" in line
    # as root every folder is writable; /proc is not, even for root
    path = write_config(tmp_path, storage={"data_dir": "/proc/vidd-data"})
    assert any("storage.data_dir: vidd can't write" in x for x in problems(check(path)))


def test_json_output(tmp_path):
    path = write_config(tmp_path, encode={"max_paralel": 2})
    r = run_vidd("check-config", "--config", str(path), "--json", timeout=90)
    assert r.returncode == 2
    report = json.loads(r.stdout)
    assert report["ok"] is False and report["source"] == "--config"
    assert report["path"] == str(path.resolve())
    assert report["problems"] == [
        f"{path.resolve()}: encode.max_paralel: unknown key; did you mean `max_parallel`?"
    ]


def test_serve_names_every_misspelt_key(tmp_path):
    path = write_config(tmp_path, encode={"max_paralel": 2}, daemon={"log_levle": "info"})
    r = run_vidd("serve", "--config", str(path), timeout=30)
    assert r.returncode == 2
    assert "did you mean `max_parallel`" in r.stderr and "did you mean `log_level`" in r.stderr


def test_preset_list_parsing():
    text = (
        "[06:54:44] hb_init: starting libhb thread\n"
        "General/\n"
        "    Very Fast 1080p30\n"
        "        Small H.264 video (up to 1080p30) and AAC stereo audio, in\n"
        "        an MP4 container.\n"
        "Web/\n"
        "    Creator 720p60\n"
    )
    assert checks.parse_preset_list(text) == {
        "Very Fast 1080p30",
        "General/Very Fast 1080p30",
        "Creator 720p60",
        "Web/Creator 720p60",
    }
