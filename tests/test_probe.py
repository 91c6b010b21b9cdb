"""The probe, with the real HandBrakeCLI: what a clip holds, and why other files are not videos."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vidd.probe import NotAVideo, probe

HANDBRAKE = "/usr/bin/HandBrakeCLI"


async def test_a_real_clip(clip: Path):
    info = await probe(HANDBRAKE, clip)
    assert info.size == clip.stat().st_size
    assert abs(info.duration - 2.0) < 0.2
    assert (info.width, info.height) == (320, 240)
    assert info.video_codec == "mpeg4"
    assert len(info.audio_codecs) == 1 and "mp3" in info.audio_codecs[0]


async def test_an_h264_clip(clip_h264: Path):
    info = await probe(HANDBRAKE, clip_h264)
    assert info.video_codec == "h264" and info.audio_codecs == ("aac",)
    assert abs(info.duration - 3.0) < 0.2


async def test_a_text_file_is_not_a_video(tmp_path: Path):
    # HandBrake scans this with exit code 0 as an `ansi` video: the probe must refuse it.
    notes = tmp_path / "notes.txt"
    notes.write_text("Shopping list\n" + "milk, eggs, bread\n" * 200)
    with pytest.raises(NotAVideo, match="ansi"):
        await probe(HANDBRAKE, notes)


async def test_random_bytes_are_not_a_video(tmp_path: Path):
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(os.urandom(256 << 10))
    with pytest.raises(NotAVideo):
        await probe(HANDBRAKE, noise)


async def test_an_empty_file_is_not_a_video(tmp_path: Path):
    empty = tmp_path / "empty.mkv"
    empty.touch()
    with pytest.raises(NotAVideo, match="empty"):
        await probe(HANDBRAKE, empty)


async def test_a_command_that_prints_too_much_is_capped() -> None:
    from vidd import children

    code, out, err = await children.run(
        [
            "python3",
            "-c",
            "import sys; sys.stdout.write('a' * 300000 + 'END');"
            "sys.stderr.write('START' + 'b' * 300000)",
        ],
        timeout_s=30,
        max_output=1000,
    )
    assert code == 0
    assert out == "a" * 1000  # the start of stdout is kept
    assert len(err) == 1000 and err.endswith("b") and "START" not in err  # the end of stderr


async def test_a_missing_handbrake_is_not_the_files_fault(clip: Path, tmp_path: Path):
    from vidd.probe import HandBrakeMissing

    with pytest.raises(HandBrakeMissing, match="it is not there"):
        await probe(str(tmp_path / "HandBrakeCLI"), clip)
    not_executable = tmp_path / "HandBrakeCLI"
    not_executable.write_text("#!/bin/sh\n")
    with pytest.raises(HandBrakeMissing, match="not executable|Permission denied"):
        await probe(str(not_executable), clip)
