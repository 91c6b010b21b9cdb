"""Intake against real files, the real HandBrakeCLI probe and a real SQLite store."""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
from pathlib import Path

import pytest

from vidd import disk
from vidd import intake as intake_mod
from vidd.intake import Intake, clean_name, safe_ext
from vidd.job import Status
from vidd.layout import Layout
from vidd.store import Store

TEXT = "".join(f"line {i}: these are my notes, not a video at all\n" for i in range(40))


@pytest.fixture
async def env(make_config):
    cfg = make_config()
    cfg.storage.data_dir.mkdir(parents=True)
    cfg.storage.inbox_dir.mkdir(parents=True)
    async with Store(cfg.storage.db_path) as store:
        yield cfg, store, Intake(cfg, store, Layout(cfg.storage))


def drop(cfg, src: Path, name: str) -> Path:
    path = cfg.storage.inbox_dir / name
    shutil.copyfile(src, path)
    return path


def files(folder: Path) -> list[Path]:
    return sorted(folder.iterdir()) if folder.exists() else []


async def test_a_clip_is_claimed_probed_and_queued(env, clip: Path) -> None:
    cfg, store, intake = env
    path = drop(cfg, clip, "clip.avi")
    job = await intake.admit(path, "inbox")
    assert job.status is Status.QUEUED
    assert job.name == "clip.avi"
    assert job.origin == "inbox"
    assert job.profile == cfg.encode.default_profile
    assert job.source_ext == ".avi"
    assert job.error is None
    assert job.source is not None
    assert job.source.size == clip.stat().st_size
    assert job.source.duration == pytest.approx(2.0, abs=0.2)
    assert (job.source.width, job.source.height) == (320, 240)
    assert job.source.video_codec == "mpeg4"
    claimed = cfg.storage.sources_dir / f"{job.id}.avi"
    assert claimed.read_bytes() == clip.read_bytes()
    assert not path.exists()
    assert await store.get(job.id) == job
    assert job.queue_position == 0


@pytest.mark.parametrize("name", ["notes.mp4", "notes.txt"])
async def test_text_is_rejected_and_kept(env, tmp_path: Path, name: str) -> None:
    cfg, store, intake = env
    path = cfg.storage.inbox_dir / name
    path.write_text(TEXT)
    job = await intake.admit(path, "inbox")
    assert job.status is Status.REJECTED
    assert job.error is not None and job.error.code == "not_video"
    assert "not a video" in job.error.message
    assert job.source is None
    assert job.finished_at is not None
    assert not path.exists()
    kept = cfg.storage.rejected_dir / f"{job.id}-{name}"  # recognisable by its name
    assert job.rejected_as == kept.name
    assert kept.read_text() == TEXT
    assert files(cfg.storage.sources_dir) == []
    assert (await store.get(job.id)) == job
    assert (await store.counts())["rejected"] == 1


async def test_an_uploaded_non_video_is_deleted(env) -> None:
    cfg, store, intake = env
    cfg.storage.tmp_dir.mkdir()
    path = cfg.storage.tmp_dir / "upload-1"
    path.write_text(TEXT)
    job = await intake.admit(path, "upload", name="notes.txt")
    assert job.status is Status.REJECTED
    assert job.name == "notes.txt"
    assert job.origin == "upload"
    assert job.error is not None and "not a video" in job.error.message
    assert not path.exists()
    for folder in ("sources", "rejected", "tmp"):
        assert files(cfg.storage.data_dir / folder) == []


async def test_an_upload_takes_its_extension_from_the_name(env, clip: Path) -> None:
    cfg, store, intake = env
    cfg.storage.tmp_dir.mkdir()
    path = cfg.storage.tmp_dir / "upload-2"
    shutil.copyfile(clip, path)
    name = "../../Holiday 2024.AVI"  # a name, never a path
    job = await intake.admit(path, "upload", name=name, profile="web")
    assert job.status is Status.QUEUED
    assert job.name == name
    assert job.source_ext == ".avi"
    assert (cfg.storage.sources_dir / f"{job.id}.avi").exists()
    assert files(cfg.storage.tmp_dir) == []
    assert files(cfg.storage.sources_dir) == [cfg.storage.sources_dir / f"{job.id}.avi"]
    assert not list(cfg.storage.data_dir.parent.glob("*.AVI"))


HOSTILE = ["my clip.avi", "a;touch X;.avi", "$(id).mkv", "-o.avi", "zażółć.mov", "it's.mp4"]


async def test_hostile_names_are_only_names(env, clip: Path, tmp_path: Path) -> None:
    cfg, store, intake = env
    jobs = []
    for name in HOSTILE:
        jobs.append(await intake.admit(drop(cfg, clip, name), "inbox"))
    for name, job in zip(HOSTILE, jobs, strict=True):
        assert job.status is Status.QUEUED, job
        assert job.name == name
        ext = Path(name).suffix
        assert (cfg.storage.sources_dir / f"{job.id}{ext}").exists()
    listed = await store.list_jobs()
    assert sorted(j.name for j in listed) == sorted(HOSTILE)
    assert files(cfg.storage.inbox_dir) == []
    assert not any(p.name == "X" for p in tmp_path.rglob("*"))
    assert not Path("X").exists()
    # Only ids name files: nothing of the user's names is on disk any more.
    assert all(p.stem in {j.id for j in jobs} for p in files(cfg.storage.sources_dir))


async def test_undecodable_and_control_characters(env, clip: Path) -> None:
    cfg, store, intake = env
    # Latin-1 "é" (not UTF-8), an escape sequence, a newline and a bidi override.
    raw = b"caf\xe9\x1b[31m\nred" + "\u202e".encode() + b".avi"
    raw = os.fsencode(cfg.storage.inbox_dir) + b"/" + raw
    shutil.copyfile(clip, raw)
    path = Path(os.fsdecode(raw))
    job = await intake.admit(path, "inbox")
    assert job.status is Status.QUEUED
    assert job.name == "caf\ufffd[31mred.avi"
    assert (await store.get(job.id)).name == job.name


def test_clean_name_and_safe_ext() -> None:
    assert clean_name("a\x00b\tc\x7f\u200bd.avi") == "abcd.avi"
    assert clean_name("  spaced.avi  ") == "spaced.avi"
    assert clean_name("\x01\x02") == "untitled"
    assert len(clean_name("x" * 10_000 + ".avi")) == 255
    assert safe_ext("A.MKV") == ".mkv"
    assert safe_ext("a.tar.gz") == ".gz"
    assert safe_ext("noext") == ""
    assert safe_ext(".hidden") == ""
    assert safe_ext("a.") == ""
    assert safe_ext("a.toolongext") == ""
    assert safe_ext("a.m p4") == ""
    assert safe_ext("a.mp4;rm") == ""
    assert safe_ext("a.ĳk") == ""


async def test_unknown_profile_leaves_the_file_alone(env, clip: Path) -> None:
    cfg, store, intake = env
    path = drop(cfg, clip, "clip.avi")
    before = path.stat()
    with pytest.raises(ValueError, match="profile"):
        await intake.admit(path, "inbox", profile="nope")
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino, before.st_size, before.st_mtime_ns,
    )  # fmt: skip
    assert files(cfg.storage.sources_dir) == []
    assert await store.list_jobs() == []


def exdev_from(folder: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make os.rename out of `folder` fail as it does across filesystems."""
    real = os.rename
    calls: list[str] = []

    def rename(src, dst, *a, **kw):
        if Path(src).parent == folder:
            calls.append(str(src))
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real(src, dst, *a, **kw)

    monkeypatch.setattr(intake_mod.os, "rename", rename)
    return calls


async def test_a_claim_across_filesystems_copies_then_unlinks(
    env, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, store, intake = env
    path = drop(cfg, clip, "clip.avi")
    os.utime(path, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    calls = exdev_from(cfg.storage.inbox_dir, monkeypatch)
    job = await intake.admit(path, "inbox")
    assert calls == [str(path)]
    assert job.status is Status.QUEUED
    claimed = cfg.storage.sources_dir / f"{job.id}.avi"
    assert claimed.read_bytes() == clip.read_bytes()
    assert claimed.stat().st_mtime_ns == 1_600_000_000_123_456_789
    assert not path.exists()
    assert files(cfg.storage.sources_dir) == [claimed]  # no partial copy left behind


async def test_a_failed_copy_across_filesystems_loses_nothing(
    env, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, store, intake = env
    path = drop(cfg, clip, "clip.avi")
    exdev_from(cfg.storage.inbox_dir, monkeypatch)

    def fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(intake_mod.os, "fsync", fsync)
    with pytest.raises(OSError, match="No space"):
        await intake.admit(path, "inbox")
    assert path.read_bytes() == clip.read_bytes()
    assert files(cfg.storage.sources_dir) == []
    assert await store.list_jobs() == []


async def test_a_copy_the_disk_guard_forbids_is_not_made(
    make_config, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_config(storage={"min_free_bytes": 1 << 60})
    cfg.storage.inbox_dir.mkdir(parents=True)
    path = drop(cfg, clip, "clip.avi")
    exdev_from(cfg.storage.inbox_dir, monkeypatch)
    async with Store(cfg.storage.db_path) as store:
        with pytest.raises(disk.DiskFull):
            await Intake(cfg, store, Layout(cfg.storage)).admit(path, "inbox")
        assert await store.list_jobs() == []
    assert path.read_bytes() == clip.read_bytes()
    assert files(cfg.storage.sources_dir) == []


async def test_a_probe_that_breaks_puts_the_file_back(
    env, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not "not a video" but a broken probe (an I/O error): no job, file back in place."""
    cfg, store, intake = env

    async def probe(handbrake: str, path: Path, box=None, nice: int = 0):
        assert path.parent == cfg.storage.sources_dir  # it was claimed
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(intake_mod.probe, "probe", probe)
    path = drop(cfg, clip, "clip.avi")
    ino = path.stat().st_ino
    with pytest.raises(OSError, match="Input/output"):
        await intake.admit(path, "inbox")
    assert path.stat().st_ino == ino
    assert files(cfg.storage.sources_dir) == []
    assert await store.list_jobs() == []


async def test_a_store_that_fails_puts_the_file_back(env, clip: Path) -> None:
    cfg, store, _ = env
    closed = Store(cfg.storage.data_dir / "other.db")  # never opened
    path = drop(cfg, clip, "clip.avi")
    with pytest.raises(Exception, match="closed"):
        await Intake(cfg, closed, Layout(cfg.storage)).admit(path, "inbox")
    assert path.read_bytes() == clip.read_bytes()
    assert files(cfg.storage.sources_dir) == []


async def test_a_symlink_is_not_claimed(env, clip: Path) -> None:
    cfg, store, intake = env
    link = cfg.storage.inbox_dir / "link.avi"
    link.symlink_to(clip)
    with pytest.raises(ValueError, match="regular file"):
        await intake.admit(link, "inbox")
    assert link.is_symlink() and link.resolve() == clip
    assert clip.exists()
    assert files(cfg.storage.sources_dir) == []
    assert await store.list_jobs() == []


async def test_admission_completes_when_the_caller_goes_away(env, clip: Path) -> None:
    cfg, store, intake = env
    path = drop(cfg, clip, "clip.avi")
    task = asyncio.create_task(intake.admit(path, "inbox"))
    await asyncio.sleep(0.05)  # claimed, probing
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):
        jobs = await store.list_jobs()
        if jobs and jobs[0].status is not Status.ADMITTING:
            break
        await asyncio.sleep(0.05)
    assert [j.status for j in jobs] == [Status.QUEUED]
    assert (cfg.storage.sources_dir / f"{jobs[0].id}.avi").exists()


async def test_a_stop_after_the_store_queued_the_job_leaves_the_file_with_it(
    env, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shutdown's cancel can reach an admission after the store has queued its job but
    before the answer is back: the job owns the claimed file then, and it must not go back
    to the inbox, where it would be taken a second time."""
    cfg, store, intake = env
    admitted = store.admitted
    queued = asyncio.Event()

    async def answer_late(job_id, source):
        job = await admitted(job_id, source)
        queued.set()
        await asyncio.sleep(30)  # the answer is still on its way when the stop comes
        return job

    monkeypatch.setattr(store, "admitted", answer_late)
    path = drop(cfg, clip, "clip.avi")
    task = asyncio.create_task(intake.admit(path, "inbox"))
    await asyncio.wait_for(queued.wait(), 30)
    await intake.stop(0)  # the last stage of a shutdown cuts admissions in flight
    with pytest.raises(asyncio.CancelledError):
        await task
    [job] = await store.list_jobs()
    assert job.status is Status.QUEUED
    assert (cfg.storage.sources_dir / f"{job.id}.avi").read_bytes() == clip.read_bytes()
    assert not path.exists()


async def test_a_subfolder_is_remembered_as_clean_words(env, clip: Path) -> None:
    cfg, store, intake = env
    folder = "trip/day\x1b[31m one\u202e"
    (cfg.storage.inbox_dir / folder).mkdir(parents=True)
    path = drop(cfg, clip, f"{folder}/holiday.avi")
    job = await intake.admit(path, "inbox", folder=folder)
    assert job.status is Status.QUEUED
    assert job.folder == "trip/day[31m one"  # no control or bidi characters
    assert (await store.get(job.id)) == job
    assert not path.exists() and (cfg.storage.inbox_dir / folder).is_dir()  # left in place


async def test_a_rejected_file_keeps_a_recognisable_clean_name(env) -> None:
    cfg, store, intake = env
    name = "my notes\u202etxt.exe"
    path = cfg.storage.inbox_dir / name
    path.write_text(TEXT)
    job = await intake.admit(path, "inbox")
    assert job.status is Status.REJECTED
    assert job.rejected_as == f"{job.id}-my notestxt.exe"
    assert (cfg.storage.rejected_dir / job.rejected_as).read_text() == TEXT
    assert job.to_json()["rejected_as"] == job.rejected_as
