"""A person drops files into subfolders of a running vidd's inbox and finds the results
under their own names in the output folder, even across a crash; rejected files keep a
name they recognise. The real daemon, the real HandBrakeCLI, tiny clips."""

from __future__ import annotations

import shutil
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from testkit.daemon import Daemon, get_json, wait_for
from testkit.media import ffprobe

FINAL = ("done", "failed", "rejected", "cancelled")


def jobs(d: Daemon) -> list[dict[str, Any]]:
    return list(get_json(d.url + "/api/jobs?limit=100")["jobs"])


def settled(d: Daemon, count: int) -> list[dict[str, Any]] | None:
    """Once `count` jobs have ended and, with an output folder, every done one has been
    published (or failed to): oldest first."""
    ended = [j for j in jobs(d) if j["status"] in FINAL]
    if len(ended) < count:
        return None
    publishing = d.config.storage.output_dir is not None
    unpublished = [j for j in ended if j["status"] == "done" and not j["published_as"]]
    if publishing and any(not j["publish_note"] for j in unpublished):
        return None
    return ended[::-1]


def drop(d: Daemon, source: Path, relative: str) -> None:
    """Copy in under a hidden name, then rename: how a careful tool drops a file."""
    target = d.inbox / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    hidden = target.with_name(f".{target.name}.part")
    shutil.copyfile(source, hidden)
    hidden.rename(target)


def test_subfolders_are_mirrored_names_kept_and_never_overwritten(
    daemon_factory: Callable[..., Daemon], clip: Path, tmp_path: Path
) -> None:
    out = tmp_path / "published"
    d = daemon_factory(storage={"output_dir": str(out)}, watch={"recursive": True})
    drop(d, clip, "trip/day one/holiday.avi")
    (d.inbox / "notes.txt").write_text("meeting notes\n" * 40)
    first, rejected = wait_for(lambda: settled(d, 2), timeout=60)
    if first["status"] == "rejected":
        first, rejected = rejected, first
    assert first["status"] == "done", first
    assert first["folder"] == "trip/day one"
    assert first["published_as"] == "trip/day one/holiday.mp4"
    assert first["publish_note"] is None and first["repackaged"] is False
    result = out / "trip" / "day one" / "holiday.mp4"
    streams = {s["codec_type"]: s["codec_name"] for s in ffprobe(result)["streams"]}
    assert streams == {"video": "h264", "audio": "aac"}
    assert result.samefile(d.data / "videos" / f"{first['id']}.mp4")  # a hard link: no copy

    assert rejected["status"] == "rejected"
    assert rejected["rejected_as"] == f"{rejected['id']}-notes.txt"
    kept = d.data / "rejected" / rejected["rejected_as"]
    assert kept.read_text() == "meeting notes\n" * 40

    # The same name again: the first result stays, the second is numbered, and says so.
    drop(d, clip, "trip/day one/holiday.avi")
    second = wait_for(lambda: settled(d, 3), timeout=60)[-1]
    assert second["status"] == "done", second
    assert second["published_as"] == "trip/day one/holiday (2).mp4"
    assert second["publish_note"] and "holiday.mp4" in second["publish_note"]
    assert result.samefile(d.data / "videos" / f"{first['id']}.mp4")
    assert sorted(p.name for p in result.parent.iterdir()) == ["holiday (2).mp4", "holiday.mp4"]

    log = d.log()
    assert f"job {first['id']}: published as trip/day one/holiday.mp4 (hard link)" in log
    assert f"job {second['id']}: published as trip/day one/holiday (2).mp4" in log
    assert f"kept as rejected/{rejected['id']}-notes.txt" in log
    assert list((d.inbox / "trip" / "day one").iterdir()) == []  # taken, the folders left


def test_without_recursive_a_subfolder_is_left_alone_and_said_once(
    daemon_factory: Callable[..., Daemon], clip: Path
) -> None:
    d = daemon_factory(watch={"rescan_seconds": 0.5})
    drop(d, clip, "sub/holiday.avi")
    said = "sub stays in the inbox: it is a folder"
    wait_for(lambda: said in d.log(), timeout=15)
    time.sleep(2.0)  # several rescans
    assert d.log().count(said) == 1
    assert "watch.recursive is off" in d.log()
    assert (d.inbox / "sub" / "holiday.avi").exists()
    assert jobs(d) == []


def test_too_deep_a_folder_is_left_alone(daemon_factory: Callable[..., Daemon], clip: Path) -> None:
    d = daemon_factory(watch={"recursive": True, "max_depth": 1, "rescan_seconds": 0.5})
    drop(d, clip, "a/b/deep.avi")
    drop(d, clip, "a/shallow.avi")
    [job] = wait_for(lambda: settled(d, 1), timeout=60)
    assert (job["name"], job["folder"]) == ("shallow.avi", "a")
    wait_for(lambda: "deeper than watch.max_depth (1)" in d.log(), timeout=15)
    assert (d.inbox / "a" / "b" / "deep.avi").exists()
    assert len(jobs(d)) == 1


def test_a_crash_between_done_and_published_is_finished_at_start(
    daemon_factory: Callable[..., Daemon], clip: Path, tmp_path: Path
) -> None:
    out = tmp_path / "published"
    d = daemon_factory(storage={"output_dir": str(out)})
    drop(d, clip, "lost.avi")
    drop(d, clip, "linked.avi")
    done = {j["name"]: j for j in wait_for(lambda: settled(d, 2), timeout=90)}
    assert {j["published_as"] for j in done.values()} == {"lost.mp4", "linked.mp4"}
    d.stop(signal.SIGKILL)
    # The crash, as the store would have it: both still pending. One result never got its
    # name; the other got it, but the record of that was lost.
    (out / "lost.mp4").unlink()
    with sqlite3.connect(d.data / "vidd.db") as db:
        db.execute("UPDATE jobs SET publish_pending = 1, published_as = NULL, publish_note = NULL")
    d2 = daemon_factory()
    again = {j["name"]: j for j in wait_for(lambda: settled(d2, 2), timeout=30)}
    assert again["lost.avi"]["published_as"] == "lost.mp4"
    assert again["linked.avi"]["published_as"] == "linked.mp4"  # found, not "linked (2)"
    assert sorted(p.name for p in out.iterdir()) == ["linked.mp4", "lost.mp4"]
    for name in ("lost", "linked"):
        video = d2.data / "videos" / f"{done[name + '.avi']['id']}.mp4"
        assert (out / f"{name}.mp4").samefile(video)
    assert d2.log().count("finishing a publication cut short") == 2
    assert "(already there)" in d2.log()
