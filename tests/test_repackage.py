"""Repackaging: an H.264/AAC source is stream-copied into a web MP4 by the real ffmpeg, and
verified; anything else, or a copy that fails its checks, is encoded by HandBrakeCLI."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from testkit.daemon import Daemon, get_json, wait_for
from testkit.media import FFMPEG, ffprobe, make_clip, mp4_top_boxes
from vidd import repackage
from vidd.job import MediaInfo

FINAL = ("done", "failed", "rejected", "cancelled")


def web_h264(path: Path, seconds: float = 2.0) -> Path:
    """An H.264 (High, 8-bit 4:2:0) / AAC clip: what a phone or a camera app writes."""
    subprocess.run(
        [
            FFMPEG, "-v", "error", "-y",
            "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
            "-t", str(seconds), "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac",
            str(path),
        ],
        check=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("repackage")
    return {
        "mp4": web_h264(folder / "phone.mp4"),
        "mkv": web_h264(folder / "phone.mkv"),
        # H.264 too, but High 4:4:4 (ffmpeg's choice for an RGB source): no browser plays it.
        "444": make_clip(folder / "444.mp4", vcodec="libx264", acodec="aac"),
        "mpeg4": make_clip(folder / "old.mkv"),
    }


H264_AAC = MediaInfo(duration=2.0, width=320, height=240, video_codec="h264", audio_codecs=("aac",))


@pytest.mark.parametrize(
    ("source", "ext", "why"),
    [
        (H264_AAC, ".mp4", None),
        (H264_AAC, ".MOV", None),
        (H264_AAC, ".mkv", None),
        (MediaInfo(video_codec="h264"), ".m4v", None),  # no audio at all
        (H264_AAC, ".avi", "its container (.avi) is not MP4, MOV, M4V or MKV"),
        (H264_AAC, "", "its container (no extension) is not MP4, MOV, M4V or MKV"),
        (MediaInfo(video_codec="hevc", audio_codecs=("aac",)), ".mp4", "its video is hevc"),
        (MediaInfo(video_codec="h264", audio_codecs=("aac", "ac3")), ".mkv", "its audio is ac3"),
        (None, ".mp4", "its codecs are unknown"),
    ],
)
def test_which_sources_are_tried(source: MediaInfo | None, ext: str, why: str | None) -> None:
    said = repackage.why_not(source, ext)
    if why is None:
        assert said is None
    else:
        assert said is not None and said.startswith(why)


@pytest.mark.parametrize("kind", ["mp4", "mkv"])
async def test_a_copy_keeps_the_streams_and_puts_the_index_first(
    sources: dict[str, Path], tmp_path: Path, kind: str
) -> None:
    source = sources[kind]
    out = tmp_path / "out.mp4"
    media, _ = await repackage.run(shutil.which("ffmpeg") or "ffmpeg", source, out, 2.0)
    assert media.video_codec == "h264" and media.audio_codecs == ("aac",)
    assert abs(media.duration - 2.0) < 0.2
    boxes = mp4_top_boxes(out)
    assert boxes.index("moov") < boxes.index("mdat")
    before = {s["codec_type"]: s for s in ffprobe(source)["streams"]}
    after = {s["codec_type"]: s for s in ffprobe(out)["streams"]}
    for kind_ in ("video", "audio"):  # a copy: the same codec, profile and geometry
        for key in ("codec_name", "profile", "width", "height", "sample_rate"):
            assert after[kind_].get(key) == before[kind_].get(key), (kind_, key)
    assert repackage.avc_profile(out) == 100  # High


async def test_a_copy_browsers_cant_play_is_refused(
    sources: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(repackage.Failed, match="profile"):
        await repackage.run("ffmpeg", sources["444"], tmp_path / "out.mp4", 2.0)


async def test_what_ffmpeg_cant_read_is_a_failure(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.mp4"
    bogus.write_bytes(b"\x00\x00\x00\x20ftypisom" + b"garbage" * 100)
    with pytest.raises(repackage.Failed, match="exit code"):
        await repackage.run("ffmpeg", bogus, tmp_path / "out.mp4", 2.0)


# --- through the real daemon ------------------------------------------------------------


def ended(d: Daemon, count: int) -> dict[str, dict[str, Any]] | None:
    js = get_json(d.url + "/api/jobs?limit=100")["jobs"]
    # a done job's poster follows its done record: wait for it too
    done = {
        j["name"]: j
        for j in js
        if j["status"] in FINAL and (j["status"] != "done" or j["output"]["poster_url"])
    }
    return done if len(done) >= count else None


def test_the_repackage_profile_copies_what_it_can_and_encodes_the_rest(
    daemon_factory: Callable[..., Daemon], sources: dict[str, Path]
) -> None:
    d = daemon_factory(encode={"max_parallel": 1, "default_profile": "web-full-rate"})
    names = {"phone.mp4": "mp4", "old.mkv": "mpeg4", "444.mp4": "444"}
    for name, kind in names.items():
        hidden = d.inbox / f".{name}.part"
        shutil.copyfile(sources[kind], hidden)
        hidden.rename(d.inbox / name)
    jobs = wait_for(lambda: ended(d, 3), timeout=120)
    assert {j["status"] for j in jobs.values()} == {"done"}, jobs
    assert {n: j["repackaged"] for n, j in jobs.items()} == {
        "phone.mp4": True,
        "old.mkv": False,
        "444.mp4": False,
    }
    for name, job in jobs.items():
        video = d.data / "videos" / f"{job['id']}.mp4"
        boxes = mp4_top_boxes(video)
        assert boxes.index("moov") < boxes.index("mdat"), name
        streams = {s["codec_type"]: s for s in ffprobe(video)["streams"]}
        assert (streams["video"]["codec_name"], streams["audio"]["codec_name"]) == ("h264", "aac")
        assert streams["video"]["profile"] in ("High", "Main", "Constrained Baseline"), name
        assert (d.data / "videos" / f"{job['id']}.jpg").stat().st_size > 0  # a poster either way
    copied = d.data / "videos" / f"{jobs['phone.mp4']['id']}.mp4"
    source_video = [s for s in ffprobe(sources["mp4"])["streams"] if s["codec_type"] == "video"]
    copied_video = [s for s in ffprobe(copied)["streams"] if s["codec_type"] == "video"]
    assert copied_video[0]["nb_frames"] == source_video[0]["nb_frames"]  # all 50 frames kept
    log = d.log()
    assert f"job {jobs['phone.mp4']['id']}: repackaged with ffmpeg" in log
    assert f"job {jobs['old.mkv']['id']}: encoding, not repackaging: its video is mpeg4" in log
    assert f"job {jobs['444.mp4']['id']}: repackaging failed (the H.264 profile (244)" in log
