"""A person drops files into a running vidd's inbox and gets browser-playable MP4s back."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

from testkit.daemon import Daemon, get_json, wait_for
from testkit.media import ffprobe, make_clip, mp4_top_boxes

HOSTILE_NAMES = ["my clip.avi", "a;touch X;.avi", "$(id).mkv", "-o.avi", "zażółć.mov", "it's.mp4"]


def jobs(d: Daemon) -> list[dict[str, Any]]:
    return list(get_json(d.url + "/api/jobs?limit=100")["jobs"])


def finished(d: Daemon, count: int) -> list[dict[str, Any]] | None:
    js = jobs(d)
    done = [j for j in js if j["status"] in ("done", "failed", "rejected", "cancelled")]
    return done if len(done) >= count else None


def drop(d: Daemon, source: Path, name: str) -> None:
    """Copy in under a hidden name, then rename: how a careful tool drops a file."""
    hidden = d.inbox / f".{name}.part"
    shutil.copyfile(source, hidden)
    hidden.rename(d.inbox / name)


def test_a_dropped_clip_becomes_a_web_mp4(
    daemon_factory: Callable[..., Daemon], clip: Path
) -> None:
    d = daemon_factory()
    drop(d, clip, "holiday.avi")
    [job] = wait_for(lambda: finished(d, 1), timeout=60)
    assert job["status"] == "done", job
    assert job["name"] == "holiday.avi"
    video = d.data / "videos" / f"{job['id']}.mp4"
    info = ffprobe(video)
    streams = {s["codec_type"]: s for s in info["streams"]}
    assert streams["video"]["codec_name"] == "h264"
    assert streams["audio"]["codec_name"] == "aac"
    # `-r 15` is HandBrake's peak frame rate: at most 15 frames a second
    assert 13.5 <= float(Fraction(streams["video"]["avg_frame_rate"])) <= 15.05
    boxes = mp4_top_boxes(video)
    assert boxes.index("moov") < boxes.index("mdat"), boxes  # the index is at the front
    assert abs(float(info["format"]["duration"]) - job["source"]["duration"]) < 1.0
    # the poster follows the done record a moment later, as a change of the done job
    wait_for(lambda: jobs(d)[0]["output"]["poster_url"], timeout=30)
    assert (d.data / "videos" / f"{job['id']}.jpg").stat().st_size > 0
    assert (d.data / "sources" / f"{job['id']}.avi").exists()
    assert list((d.data / "tmp").iterdir()) == []
    assert list(d.inbox.iterdir()) == []


def test_text_files_are_rejected_and_kept(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory()
    notes = "meeting notes\n" * 40
    (d.inbox / "fake.mp4").write_text(notes)
    (d.inbox / "notes.txt").write_text(notes)
    rejected = wait_for(lambda: finished(d, 2), timeout=30)
    assert {j["status"] for j in rejected} == {"rejected"}
    for job in rejected:
        assert job["error"]["code"] == "not_video" and job["error"]["message"]
    kept = sorted((d.data / "rejected").iterdir())
    assert len(kept) == 2 and all(p.read_text() == notes for p in kept)


def test_hostile_names_convert_and_inject_nothing(
    daemon_factory: Callable[..., Daemon], clip: Path, tmp_path: Path
) -> None:
    d = daemon_factory()
    mkv = make_clip(tmp_path / "src.mkv", seconds=2)
    mov = make_clip(tmp_path / "src.mov", seconds=2)
    mp4 = make_clip(tmp_path / "src.mp4", seconds=2, vcodec="libx264", acodec="aac")
    sources = {".avi": clip, ".mkv": mkv, ".mov": mov, ".mp4": mp4}
    for name in HOSTILE_NAMES:
        drop(d, sources[Path(name).suffix], name)
    done = wait_for(lambda: finished(d, len(HOSTILE_NAMES)), timeout=120)
    assert sorted(j["name"] for j in done) == sorted(HOSTILE_NAMES)
    for job in done:
        assert job["status"] == "done", job
        assert (d.data / "videos" / f"{job['id']}.mp4").stat().st_size > 0
    # nothing named X was created anywhere a shell would have put it
    for folder in (tmp_path, d.data, Path.cwd(), Path("/")):
        assert not (folder / "X").exists()
    assert not any(p.name == "X" for p in tmp_path.rglob("*"))
