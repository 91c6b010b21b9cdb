"""The inbox watcher with real files, real watchfiles, real writers in other processes,
the real HandBrakeCLI probe and a real SQLite store."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from vidd import lease
from vidd import watcher as watcher_mod
from vidd.intake import Intake
from vidd.job import Job, Status
from vidd.layout import Layout
from vidd.store import Store
from vidd.watcher import Watcher

STABLE_S = 1.5

# Writes a file in 8 chunks over some seconds, keeping it open; with "hold", keeps it
# open after the last byte until a line arrives on stdin.
WRITER = """
import sys, time
src, dst, seconds, hold = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
data = open(src, "rb").read()
n = 8
with open(dst, "wb") as f:
    for i in range(n):
        f.write(data[i * len(data) // n:(i + 1) * len(data) // n])
        f.flush()
        time.sleep(seconds / n)
    print("written", flush=True)
    if hold == "hold":
        sys.stdin.readline()
print("closed", flush=True)
"""


class Recorder:
    """A store listener noting when each job first appeared."""

    def __init__(self) -> None:
        self.added: dict[str, float] = {}

    def job_changed(self, job: Job, *, progress_only: bool) -> None:
        self.added.setdefault(job.id, time.monotonic())

    def job_deleted(self, job_id: str) -> None:
        pass


@pytest.fixture
async def env(make_config):
    cfg = make_config(watch={"stable_seconds": STABLE_S, "rescan_seconds": 1.0})
    cfg.storage.data_dir.mkdir(parents=True)
    async with Store(cfg.storage.db_path) as store:
        recorder = Recorder()
        store.subscribe(recorder)
        yield cfg, store, recorder


@pytest.fixture
async def watching(env):
    """Start a Watcher (over a given Intake, or a plain one); stopped after the test."""
    cfg, store, _ = env
    started: list[Watcher] = []

    async def start(intake: Intake | None = None) -> Watcher:
        watcher = Watcher(cfg, intake or Intake(cfg, store, Layout(cfg.storage)))
        await watcher.start()
        started.append(watcher)
        return watcher

    yield start
    for watcher in started:
        await watcher.stop()


async def wait_jobs(store: Store, n: int, timeout: float = 20.0) -> list[Job]:
    deadline = time.monotonic() + timeout
    while True:
        jobs = [j for j in await store.list_jobs() if j.status is not Status.ADMITTING]
        if len(jobs) >= n:
            return jobs
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(jobs)} jobs after {timeout} s, expected {n}: {jobs}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def start_writer():
    """Start WRITER processes; any still running after the test is killed and reaped."""
    procs: list[asyncio.subprocess.Process] = []

    async def start(src: Path, dst: Path, seconds: float, hold: bool):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", WRITER, str(src), str(dst), str(seconds),
            "hold" if hold else "",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
        await proc.communicate()


async def read_line(proc) -> str:
    return (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()


async def test_a_file_already_in_the_inbox_is_taken(env, watching, clip: Path) -> None:
    cfg, store, _ = env
    cfg.storage.inbox_dir.mkdir(parents=True)
    shutil.copyfile(clip, cfg.storage.inbox_dir / "early.avi")
    watcher = await watching()
    assert watcher.watching
    (job,) = await wait_jobs(store, 1)
    assert job.name == "early.avi"
    assert job.status is Status.QUEUED
    assert job.origin == "inbox"
    assert (cfg.storage.sources_dir / f"{job.id}.avi").read_bytes() == clip.read_bytes()
    assert list(cfg.storage.inbox_dir.iterdir()) == []


async def test_a_complete_file_renamed_in_is_taken_fast(
    env, watching, clip: Path, tmp_path: Path
) -> None:
    cfg, store, recorder = env
    await watching()  # creates the inbox
    latencies = []
    for i in range(3):
        staged = tmp_path / f"staged{i}.avi"
        shutil.copyfile(clip, staged)
        dropped = time.monotonic()
        os.rename(staged, cfg.storage.inbox_dir / f"fast{i}.avi")
        jobs = await wait_jobs(store, i + 1)
        latencies.append(recorder.added[jobs[0].id] - dropped)
        assert jobs[0].name == f"fast{i}.avi" and jobs[0].status is Status.QUEUED
    # Includes the HandBrakeCLI probe (~0.3 s); the target is ~0.5 s + probe.
    print(f"drop -> queued: {', '.join(f'{s:.2f} s' for s in latencies)}")


async def test_a_slowly_written_file_is_taken_only_when_complete(
    env, watching, start_writer, clip: Path
) -> None:
    cfg, store, recorder = env
    await watching()
    dst = cfg.storage.inbox_dir / "slow.avi"
    # 0.5 s between chunks: longer than lease_quiet_seconds, so only the lease tells.
    assert cfg.watch.lease_quiet_seconds < 0.5 < cfg.watch.stable_seconds
    writer = await start_writer(clip, dst, 4.0, hold=False)
    assert await read_line(writer) == "written"
    assert await read_line(writer) == "closed"
    closed = time.monotonic()
    await writer.wait()
    (job,) = await wait_jobs(store, 1)
    assert recorder.added[job.id] >= closed
    assert job.status is Status.QUEUED
    assert job.source is not None
    assert job.source.size == clip.stat().st_size
    assert job.source.duration == pytest.approx(2.0, abs=0.2)
    assert (cfg.storage.sources_dir / f"{job.id}.avi").read_bytes() == clip.read_bytes()
    await asyncio.sleep(0.5)
    assert len(await store.list_jobs()) == 1


async def test_a_quiet_file_held_by_a_writer_waits_for_the_close(
    env, watching, start_writer, clip: Path
) -> None:
    cfg, store, recorder = env
    await watching()
    dst = cfg.storage.inbox_dir / "held.avi"
    writer = await start_writer(clip, dst, 0.5, hold=True)
    assert await read_line(writer) == "written"
    await asyncio.sleep(STABLE_S + 1.0)  # quiet far longer than stable_seconds
    assert await store.list_jobs() == []
    assert dst.stat().st_size == clip.stat().st_size
    writer.stdin.write(b"\n")
    await writer.stdin.drain()
    assert await read_line(writer) == "closed"
    closed = time.monotonic()
    await writer.wait()
    (job,) = await wait_jobs(store, 1)
    assert recorder.added[job.id] >= closed
    assert job.source is not None and job.source.size == clip.stat().st_size
    print(f"close -> queued: {recorder.added[job.id] - closed:.2f} s")


async def test_ignored_names_are_never_taken(env, watching, clip: Path, tmp_path: Path) -> None:
    cfg, store, _ = env
    inbox = cfg.storage.inbox_dir
    inbox.mkdir(parents=True)
    outside = tmp_path / "outside.avi"
    shutil.copyfile(clip, outside)

    def make_ignored(tag: str) -> list[Path]:
        names = [f".{tag}.avi", f"{tag}.avi.part", f"{tag}.crdownload", f"{tag}.tmp",
                 f"{tag}.avi~", f"{tag}.AVI.PART"]  # fmt: skip
        paths = [inbox / n for n in names]
        for p in paths:
            shutil.copyfile(clip, p)
        folder = inbox / f"{tag}-folder.avi"
        folder.mkdir()
        shutil.copyfile(clip, folder / "inner.avi")
        link = inbox / f"{tag}-link.avi"
        link.symlink_to(outside)
        return [*paths, folder, folder / "inner.avi", link]

    ignored = make_ignored("early")  # found by the start-up scan
    watcher = await watching()
    ignored += make_ignored("late")  # seen as events
    shutil.copyfile(clip, tmp_path / "ok.avi")
    os.rename(tmp_path / "ok.avi", inbox / "ok.avi")
    (job,) = await wait_jobs(store, 1)
    assert job.name == "ok.avi"
    await asyncio.sleep(STABLE_S + 1.0)  # past stable_seconds and a rescan
    assert [j.name for j in await store.list_jobs()] == ["ok.avi"]
    assert all(os.path.lexists(p) for p in ignored)
    assert outside.read_bytes() == clip.read_bytes()
    assert watcher.watching
    # A browser finishing its download renames the .part file: now it is taken.
    os.rename(inbox / "late.avi.part", inbox / "late.avi")
    jobs = await wait_jobs(store, 2)
    assert jobs[0].name == "late.avi"


async def test_entries_never_taken_are_each_logged_once(env, watching, clip, tmp_path, caplog):
    """A folder, a symlink and a FIFO stay in the inbox, and the log says so, once each."""
    cfg, store, _ = env
    inbox = cfg.storage.inbox_dir
    inbox.mkdir(parents=True)
    outside = tmp_path / "outside.avi"
    shutil.copyfile(clip, outside)

    def make(tag: str) -> dict[str, str]:
        (inbox / f"{tag}-folder.avi").mkdir()
        (inbox / f"{tag}-link.avi").symlink_to(outside)
        os.mkfifo(inbox / f"{tag}-pipe.avi")
        return {f"{tag}-folder.avi": "folder", f"{tag}-link.avi": "symlink",
                f"{tag}-pipe.avi": "FIFO"}  # fmt: skip

    def said() -> list[str]:
        return [r.getMessage() for r in caplog.records if "stays in the inbox" in r.getMessage()]

    caplog.set_level("INFO", logger="vidd.watcher")
    expected = make("early")  # found by the start-up scan
    (inbox / ".hidden-folder").mkdir()  # hidden: ignored without a word, as before
    watcher = await watching()
    expected |= make("late")  # seen as events
    deadline = time.monotonic() + 20
    while len(said()) < len(expected):
        assert time.monotonic() < deadline, said()
        await asyncio.sleep(0.05)
    scans = watcher.scans
    while watcher.scans < scans + 2:  # two more looks at the whole inbox: nothing new said
        assert time.monotonic() < deadline + 10, watcher
        await asyncio.sleep(0.05)
    lines = said()
    assert len(lines) == len(expected), lines
    for name, kind in expected.items():
        (line,) = [x for x in lines if x.startswith(f"watcher: {name} ")]
        assert kind in line and "\n" not in line
    assert not [r for r in caplog.records if r.exc_info or r.levelname == "ERROR"]
    assert await store.list_jobs() == []
    # A new entry in place of an old one is a new entry: said again.
    (inbox / "early-folder.avi").rmdir()
    (inbox / "early-folder.avi").symlink_to(outside)
    while len(said()) < len(expected) + 1:
        assert time.monotonic() < deadline + 30, said()
        await asyncio.sleep(0.05)
    assert "symlink" in said()[-1] and "early-folder.avi" in said()[-1]


class FailOnce(Intake):
    """The real Intake, except that the first admission of boom.avi raises `error`."""

    def __init__(self, cfg, store, error: Exception) -> None:
        super().__init__(cfg, store, Layout(cfg.storage))
        self.error = error
        self.calls: list[str] = []

    async def admit(self, path: Path, origin, **kwargs) -> Job:
        self.calls.append(path.name)
        if path.name == "boom.avi" and self.calls.count("boom.avi") == 1:
            raise self.error
        return await super().admit(path, origin, **kwargs)


async def drop_and_wait_for_a_try(cfg, intake: FailOnce, clip: Path) -> Path:
    """Drop boom.avi into the inbox and wait until the watcher has tried to admit it."""
    boom = cfg.storage.inbox_dir / "boom.avi"
    shutil.copyfile(clip, boom)
    for _ in range(100):
        if intake.calls:
            break
        await asyncio.sleep(0.05)
    return boom


async def test_a_failed_admission_is_retried_only_after_a_change(env, watching, clip: Path) -> None:
    """A file wrong in itself (not a regular file, say) is tried again once it changes."""
    cfg, store, _ = env
    intake = FailOnce(cfg, store, ValueError("not a regular file"))
    watcher = await watching(intake)
    boom = await drop_and_wait_for_a_try(cfg, intake, clip)
    assert intake.calls == ["boom.avi"]
    await asyncio.sleep(STABLE_S)  # past a rescan: still not retried
    assert intake.calls == ["boom.avi"]
    assert boom.exists() and watcher.failures == 1 and watcher.watching
    shutil.copyfile(clip, cfg.storage.inbox_dir / "good.avi")  # the watcher still works
    (job,) = await wait_jobs(store, 1)
    assert job.name == "good.avi"
    assert intake.calls.count("boom.avi") == 1
    os.utime(boom)  # it changed: try again
    jobs = await wait_jobs(store, 2)
    assert jobs[0].name == "boom.avi" and jobs[0].status is Status.QUEUED
    assert intake.calls.count("boom.avi") == 2


async def test_a_passing_failure_is_retried_with_backoff_and_shown(
    env, watching, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disk full, a locked database, a missing HandBrakeCLI: the file stays in the inbox,
    /api/status can say why, and it is tried again by itself (no touch needed)."""
    cfg, store, _ = env
    monkeypatch.setattr(watcher_mod, "RETRY_FIRST_S", 1.0)
    intake = FailOnce(cfg, store, sqlite3.OperationalError("database is locked"))
    watcher = await watching(intake)
    await drop_and_wait_for_a_try(cfg, intake, clip)
    await asyncio.sleep(0.1)
    (trouble,) = watcher.troubles()
    assert trouble["name"] == "boom.avi" and "locked" in str(trouble["reason"])
    assert 0 < trouble["retry_in_s"] <= 1.0
    (job,) = await wait_jobs(store, 1)  # retried by itself, untouched
    assert job.name == "boom.avi" and job.status is Status.QUEUED
    assert intake.calls.count("boom.avi") == 2
    assert watcher.troubles() == []


async def test_without_leases_long_quiet_decides(
    env, watching, clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where Linux can't answer (has_writer None), only stable_seconds of quiet tells."""
    cfg, store, recorder = env
    monkeypatch.setattr(lease, "has_writer", lambda path: None)
    await watching()
    shutil.copyfile(clip, tmp_path / "x.avi")
    dropped = time.monotonic()
    os.rename(tmp_path / "x.avi", cfg.storage.inbox_dir / "x.avi")
    (job,) = await wait_jobs(store, 1)
    waited = recorder.added[job.id] - dropped
    print(f"drop -> queued without leases: {waited:.2f} s")
    assert waited >= STABLE_S
    assert job.source is not None and job.source.size == clip.stat().st_size


async def test_a_replaced_inbox_is_watched_again(env, watching, clip: Path) -> None:
    cfg, store, _ = env
    watcher = await watching()
    inbox = cfg.storage.inbox_dir
    inbox.rmdir()
    inbox.mkdir()
    await asyncio.sleep(1.5)  # a rescan notices and re-arms
    assert watcher.arms == 2
    for _ in range(12):  # and the new watch stays up
        assert watcher.watching
        await asyncio.sleep(0.1)
    shutil.copyfile(clip, inbox / "again.avi")
    (job,) = await wait_jobs(store, 1)
    assert job.name == "again.avi"
    assert watcher.watching


async def test_stop_is_idempotent(env, clip: Path) -> None:
    cfg, store, _ = env
    watcher = Watcher(cfg, Intake(cfg, store, Layout(cfg.storage)))
    assert not watcher.watching
    await watcher.start()
    assert watcher.watching and cfg.storage.inbox_dir.is_dir()
    await watcher.stop()
    await watcher.stop()
    assert not watcher.watching
    shutil.copyfile(clip, cfg.storage.inbox_dir / "late.avi")
    await asyncio.sleep(0.8)
    assert await store.list_jobs() == []
    assert "watching=False" in repr(watcher)


QUIET = 4.0  # a long lease_quiet_seconds, so that which rule took a file shows


@contextlib.asynccontextmanager
async def quiet_watcher(make_config) -> AsyncIterator[tuple[Any, Store, Recorder]]:
    """A watcher with a long quiet time over a real store: (config, store, recorder)."""
    cfg = make_config(
        watch={"stable_seconds": 30.0, "lease_quiet_seconds": QUIET, "rescan_seconds": 60.0}
    )
    cfg.storage.data_dir.mkdir(parents=True)
    async with Store(cfg.storage.db_path) as store:
        recorder = Recorder()
        store.subscribe(recorder)
        watcher = Watcher(cfg, Intake(cfg, store, Layout(cfg.storage)))
        await watcher.start()
        try:
            yield cfg, store, recorder
        finally:
            await watcher.stop()


async def test_a_file_renamed_in_whole_skips_the_quiet_time_a_written_one_waits(
    make_config, clip: Path, tmp_path: Path
) -> None:
    quiet = QUIET
    old = time.time() - 3600
    async with quiet_watcher(make_config) as (cfg, store, recorder):
        # Written an hour ago elsewhere, then renamed in: its arrival is its only event.
        staged = tmp_path / "staged.avi"
        shutil.copyfile(clip, staged)
        os.utime(staged, (old, old))
        dropped = time.monotonic()
        os.rename(staged, cfg.storage.inbox_dir / "whole.avi")
        (job,) = await wait_jobs(store, 1, timeout=quiet * 3)
        assert job.status is Status.QUEUED and job.name == "whole.avi"
        assert recorder.added[job.id] - dropped < quiet

        # Written in the inbox itself, then given an old mtime: a second event, so the
        # quiet time holds (counted from that last event).
        in_place = cfg.storage.inbox_dir / "written.avi"
        in_place.write_bytes(clip.read_bytes())
        await asyncio.sleep(0.5)  # its writing is seen, as its own event
        assert await store.list_jobs() == [job]  # fresh content: not taken
        os.utime(in_place, (old, old))
        last_event = time.monotonic()
        jobs = await wait_jobs(store, 2, timeout=quiet * 4)
        (second,) = [j for j in jobs if j.name == "written.avi"]
        assert recorder.added[second.id] - last_event >= quiet - 0.05


async def test_a_file_just_written_elsewhere_and_renamed_in_skips_the_quiet_time_too(
    make_config, clip: Path, tmp_path: Path
) -> None:
    """A fresh mtime does not tell a rename from a file written in place at once (watchfiles
    reports both as one "added"); inotify's own IN_MOVED_TO does (arrivals.py). The file
    written in place, in one go, still waits the quiet time."""
    quiet = QUIET
    async with quiet_watcher(make_config) as (cfg, store, recorder):
        staged = tmp_path / "staged.avi"
        shutil.copyfile(clip, staged)  # written just now: its mtime is fresh
        dropped = time.monotonic()
        os.rename(staged, cfg.storage.inbox_dir / "atomic.avi")
        (job,) = await wait_jobs(store, 1, timeout=quiet * 3)
        assert job.name == "atomic.avi"
        assert recorder.added[job.id] - dropped < 1.0

        in_place = cfg.storage.inbox_dir / "written.avi"
        in_place.write_bytes(clip.read_bytes())  # created, written, closed at once
        written = time.monotonic()
        jobs = await wait_jobs(store, 2, timeout=quiet * 4)
        (second,) = [j for j in jobs if j.name == "written.avi"]
        assert recorder.added[second.id] - written >= quiet - 0.05


async def test_a_renamed_in_file_is_taken_on_its_event_not_at_a_tick(
    env, watching, clip: Path, tmp_path: Path, monkeypatch
) -> None:
    # With the tick far away, only the arrival's own event can start the look that takes it.
    monkeypatch.setattr(watcher_mod, "TICK_S", 60.0)
    cfg, store, _ = env
    await watching()
    staged = tmp_path / "staged.avi"
    shutil.copyfile(clip, staged)
    old = time.time() - 3600
    os.utime(staged, (old, old))
    os.rename(staged, cfg.storage.inbox_dir / "whole.avi")
    (job,) = await wait_jobs(store, 1, timeout=30.0)
    assert job.name == "whole.avi" and job.status is Status.QUEUED


async def test_a_renamed_in_file_still_open_for_writing_waits_for_the_close(
    env, watching, start_writer, clip: Path, tmp_path: Path
) -> None:
    # Renamed in whole, with an old mtime, but its writer still holds it: the first look
    # takes no second stat, and the lease alone keeps it out.
    cfg, store, recorder = env
    await watching()
    staged = tmp_path / "staged.avi"
    writer = await start_writer(clip, staged, 0.2, hold=True)
    assert await read_line(writer) == "written"
    old = time.time() - 3600
    os.utime(staged, (old, old))
    os.rename(staged, cfg.storage.inbox_dir / "held.avi")
    await asyncio.sleep(1.0)
    assert await store.list_jobs() == []
    writer.stdin.write(b"\n")
    await writer.stdin.drain()
    assert await read_line(writer) == "closed"
    closed = time.monotonic()
    await writer.wait()
    (job,) = await wait_jobs(store, 1)
    assert recorder.added[job.id] >= closed
    assert job.source is not None and job.source.size == clip.stat().st_size
