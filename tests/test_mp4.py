"""The MP4 reader: duration, geometry, codecs and moov order of real files, and refusal
of anything cut off or not an MP4."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from testkit.media import FFMPEG, ffprobe
from vidd import mp4


def remux(source: Path, out: Path, *extra: str) -> Path:
    subprocess.run(
        [FFMPEG, "-v", "error", "-y", "-i", str(source), "-c", "copy", *extra, str(out)],
        check=True,
        timeout=60,
    )
    return out


@pytest.fixture(scope="session")
def faststart(clip_h264: Path, clip_dir: Path) -> Path:
    return remux(clip_h264, clip_dir / "faststart.mp4", "-movflags", "+faststart")


@pytest.fixture(scope="session")
def moov_last(clip_h264: Path, clip_dir: Path) -> Path:
    return remux(clip_h264, clip_dir / "moov-last.mp4")


def test_reads_what_ffprobe_reads(faststart: Path) -> None:
    info = mp4.inspect(faststart)
    probed = ffprobe(faststart)
    assert abs(info.media.duration - float(probed["format"]["duration"])) < 0.05
    assert (info.media.width, info.media.height) == (320, 240)
    assert info.media.video_codec == "h264"
    assert info.media.audio_codecs == ("aac",)
    assert info.media.size == faststart.stat().st_size
    assert info.moov_first


def test_tells_where_the_index_is(moov_last: Path) -> None:
    info = mp4.inspect(moov_last)
    assert not info.moov_first
    assert info.media.video_codec == "h264"


@pytest.mark.parametrize("keep", [0.3, 0.9])
def test_a_cut_off_file_is_refused(faststart: Path, tmp_path: Path, keep: float) -> None:
    data = faststart.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(mp4.NotAnMp4):
        mp4.inspect(cut)


def test_a_moov_last_file_cut_before_its_index_is_refused(moov_last: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(moov_last.read_bytes()[:-200])
    with pytest.raises(mp4.NotAnMp4):
        mp4.inspect(cut)


@pytest.mark.parametrize("content", [b"", b"hello world\n" * 50, bytes(range(256)) * 40])
def test_not_an_mp4(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.mp4"
    path.write_bytes(content)
    with pytest.raises(mp4.NotAnMp4):
        mp4.inspect(path)
