"""The poster after done: a job is done as soon as its verified video is in videos/, and
its poster follows as a change of the done job. Owed posters survive a stop or a crash:
the next start makes them, or takes the one a crash left made but not recorded."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from vidd import pool as pool_module
from vidd.config import Config
from vidd.encoder import Encoder
from vidd.intake import Intake
from vidd.job import Job, Status
from vidd.layout import Layout
from vidd.metrics import Metrics
from vidd.pool import Pool
from vidd.store import Store

JPEG = b"\xff\xd8\xff"


class Changes:
    """Every non-progress change of every job, as the hub hears it."""

    def __init__(self) -> None:
        self.jobs: list[Job] = []
        self.changed = asyncio.Event()

    def job_changed(self, job: Job, *, progress_only: bool) -> None:
        if not progress_only:
            self.jobs.append(job)
            self.changed.set()

    def job_deleted(self, job_id: str) -> None:
        pass

    async def until(self, predicate: Callable[[], bool], timeout: float = 60) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


class Daemonless:
    """A real store, intake, encoder and pool on one data folder; `start` and `stop` as a
    daemon's start-up and shutdown do."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.layout = Layout(cfg.storage)
        self.layout.make_dirs()
        self.store = Store(cfg.storage.db_path)
        self.changes = Changes()
        self.pool: Pool | None = None

    async def start(self, *, pool: bool = True) -> None:
        await self.store.open()
        self.store.subscribe(self.changes)
        if pool:
            self.start_pool()

    def start_pool(self) -> None:
        self.pool = Pool(self.cfg, self.store, Encoder(self.cfg, self.layout), self.layout)
        self.store.subscribe(self.pool)
        self.pool.start()

    async def stop(self) -> None:
        if self.pool is not None:
            await self.pool.stop(5)
        await self.store.close()

    async def add(self, clip: Path, profile: str | None = None) -> Job:
        path = self.cfg.storage.tmp_dir / f"incoming-{os.urandom(4).hex()}{clip.suffix}"
        path.write_bytes(clip.read_bytes())
        intake = Intake(self.cfg, self.store, self.layout)
        return await intake.admit(path, "upload", name=clip.name, profile=profile)

    def owed(self) -> set[str]:
        with sqlite3.connect(self.cfg.storage.db_path) as db:
            return {r[0] for r in db.execute("SELECT id FROM jobs WHERE poster_pending = 1")}


@pytest.fixture
async def rigs(make_config: Callable[..., Config]) -> AsyncIterator[Callable[..., Any]]:
    made: list[Daemonless] = []

    def make(text: str = "", **encode: Any) -> Daemonless:
        d = Daemonless(make_config(text, watch={"enabled": False}, encode=encode))
        made.append(d)
        return d

    yield make
    for d in made:
        if d.store._db is not None:  # noqa: SLF001 - a test stopped it itself
            await d.stop()


async def test_done_comes_first_and_the_poster_follows_as_a_change(
    rigs, clip: Path, monkeypatch
) -> None:
    # Nothing else runs: the poster must not wait for a spare core (it would wait for
    # good here, and the test run out of time).
    monkeypatch.setattr(pool_module, "POSTER_WAIT_MAX_S", 3600.0)
    d = rigs()
    await d.start()
    job = await d.add(clip)

    def seen(status: Status, poster: bool) -> Job | None:
        return next(
            (j for j in d.changes.jobs if j.id == job.id and j.status is status
             and j.poster is poster),
            None,
        )  # fmt: skip

    await d.changes.until(lambda: seen(Status.DONE, True) is not None)
    first_done = next(j for j in d.changes.jobs if j.id == job.id and j.status is Status.DONE)
    assert first_done.poster is False  # done without waiting for ffmpeg
    assert first_done.output is not None
    later = seen(Status.DONE, True)
    assert later is not None and later.to_json()["output"]["poster_url"] == f"/videos/{job.id}.jpg"
    assert later.output == first_done.output  # the same result, only the poster added
    assert (d.cfg.storage.videos_dir / f"{job.id}.jpg").read_bytes()[:3] == JPEG
    assert d.owed() == set()
    assert list(d.cfg.storage.tmp_dir.iterdir()) == []


async def test_a_poster_that_fails_leaves_the_job_done_without_one(rigs, clip: Path) -> None:
    d = rigs(ffmpeg="/bin/false")
    await d.start()
    job = await d.add(clip)
    await d.changes.until(lambda: job.id not in d.owed() and _status(d, job.id) == "done")
    stored = await d.store.get(job.id)
    assert stored is not None and stored.status is Status.DONE and stored.poster is False
    assert not (d.cfg.storage.videos_dir / f"{job.id}.jpg").exists()
    assert list(d.cfg.storage.tmp_dir.iterdir()) == []


async def test_no_ffmpeg_means_no_poster_owed(rigs, clip: Path) -> None:
    d = rigs(ffmpeg="")
    await d.start()
    job = await d.add(clip)
    await d.changes.until(lambda: any(j.id == job.id and j.status is Status.DONE
                                      for j in d.changes.jobs))  # fmt: skip
    assert d.owed() == set()


async def _done_but_poster_owed(d: Daemonless, clip: Path) -> Job:
    """What a crash right after the done record leaves: the video in videos/, the job done,
    its poster owed and not made (no pool runs here)."""
    await d.start(pool=False)
    job = await d.add(clip)
    running = await d.store.claim_next()
    assert running is not None and running.id == job.id
    result = await Encoder(d.cfg, d.layout).run(running, lambda p: None)
    await d.store.finish(job.id, result.output, poster=False, log_tail="", poster_pending=True)
    await d.stop()
    return job


async def test_a_poster_owed_at_a_crash_is_made_at_the_next_start(rigs, clip: Path) -> None:
    d = rigs()
    job = await _done_but_poster_owed(d, clip)
    assert d.owed() == {job.id}

    again = rigs()
    assert again.cfg.storage.db_path == d.cfg.storage.db_path
    await again.start()
    await again.changes.until(lambda: any(j.id == job.id and j.poster for j in again.changes.jobs))
    assert (again.cfg.storage.videos_dir / f"{job.id}.jpg").read_bytes()[:3] == JPEG
    assert again.owed() == set()
    assert list(again.cfg.storage.tmp_dir.iterdir()) == []


async def test_a_poster_made_but_not_recorded_at_a_crash_is_taken(rigs, clip: Path) -> None:
    d = rigs()
    job = await _done_but_poster_owed(d, clip)
    made = await Encoder(d.cfg, d.layout).make_poster(job.id, 2.0)  # renamed in, then the crash
    assert made and d.owed() == {job.id}

    again = rigs(ffmpeg="/bin/false")  # it could not make one now: the one there is taken
    await again.start()
    await again.changes.until(lambda: any(j.id == job.id and j.poster for j in again.changes.jobs))
    assert again.owed() == set()


async def test_a_job_deleted_before_its_poster_is_recorded_leaves_no_poster(
    rigs, clip: Path
) -> None:
    d = rigs()
    job = await _done_but_poster_owed(d, clip)
    d.store = Store(d.cfg.storage.db_path)
    await d.store.open()
    assert await d.store.delete(job.id)  # as Lifecycle does, with its files
    for path in d.layout.outputs(job.id):
        path.unlink(missing_ok=True)
    await d.store.close()
    d.store = Store(d.cfg.storage.db_path)
    # A pool that still owes it (it was done when the encode ended) makes it, finds the job
    # gone, and removes the poster.
    await d.start()
    assert d.pool is not None
    d.pool._poster_later(job.id, 2.0)  # noqa: SLF001 - the moment after done, replayed
    await asyncio.sleep(0)
    task = d.pool._posters.get(job.id)  # noqa: SLF001
    assert task is not None
    await asyncio.wait_for(task, 30)
    assert not d.layout.poster(job.id).exists()
    assert list(d.cfg.storage.tmp_dir.iterdir()) == []


async def test_a_stop_leaves_the_poster_owed_and_tmp_clean(rigs, clip: Path) -> None:
    d = rigs()
    job = await _done_but_poster_owed(d, clip)
    d.store = Store(d.cfg.storage.db_path)
    d.changes = Changes()
    await d.start()
    await d.stop()  # at once: the recovery's poster is cancelled, or done, never half-made
    owed = d.owed()
    poster = d.layout.poster(job.id)
    assert (job.id in owed) != poster.exists(), (owed, poster.exists())
    assert list(d.cfg.storage.tmp_dir.iterdir()) == []


def _status(d: Daemonless, job_id: str) -> str:
    with sqlite3.connect(d.cfg.storage.db_path) as db:
        row = db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return str(row[0]) if row else ""


async def test_an_encode_is_counted_once_though_its_done_job_changes_again(
    rigs, clip: Path
) -> None:
    d = rigs()
    await d.start()
    metrics = Metrics()
    d.store.subscribe(metrics)
    job = await d.add(clip)
    await d.changes.until(lambda: any(j.id == job.id and j.poster for j in d.changes.jobs))
    dones = [j for j in d.changes.jobs if j.id == job.id and j.status is Status.DONE]
    assert len(dones) == 2  # the end, then its poster
    assert metrics.ended["done"] == 1


# The fake HandBrake's sleep mode (a stream copy of an H.264/AAC source after S seconds,
# next to no CPU), chosen per job by its profile: a short encode and a long one.
SLEEPS = """
[encode.profiles.short]
args = ["--fake-sleep", "0.3"]
[encode.profiles.long]
args = ["--fake-sleep", "6"]
"""
FAKE = Path(__file__).parent / "fake_handbrake.py"


async def _short_done_beside_a_long_one(
    rigs, clip_h264: Path, monkeypatch, *, queued: bool = False, cores: int = 1
) -> tuple[Daemonless, Job, Job]:
    """A one-core machine (unless `cores` says otherwise) and two encodes: the short one
    ends while the long one runs beside it, or (`queued`: one at a time) starts behind
    it. Both their posters made, the changes are in `d.changes`."""
    monkeypatch.setattr(pool_module, "CORES", cores)
    d = rigs(SLEEPS, handbrake=str(FAKE), max_parallel=1 if queued else 2, default_profile="short")
    if queued:  # both queued before the pool starts: the long one waits for the short
        await d.start(pool=False)
        short = await d.add(clip_h264, profile="short")
        long = await d.add(clip_h264, profile="long")
        d.start_pool()
    else:
        await d.start()
        long = await d.add(clip_h264, profile="long")
        short = await d.add(clip_h264, profile="short")
    await d.changes.until(
        lambda: {j.id for j in d.changes.jobs if j.poster} == {long.id, short.id}, timeout=60
    )
    return d, short, long


def _first(d: Daemonless, job: Job, *, poster: bool) -> int:
    """Where in the changes the job was first done (with its poster, or before it)."""
    return next(
        i for i, j in enumerate(d.changes.jobs)
        if j.id == job.id and j.status is Status.DONE and j.poster is poster
    )  # fmt: skip


async def test_a_poster_waits_for_a_core_no_encode_needs(
    rigs, clip_h264: Path, monkeypatch
) -> None:
    """Made beside the encodes that keep every core busy, a poster only slows them: it
    waits until one ends (in a batch, for the tail, where a core is left idle)."""
    d, short, long = await _short_done_beside_a_long_one(rigs, clip_h264, monkeypatch)
    assert _first(d, short, poster=False) < _first(d, long, poster=False)
    assert _first(d, long, poster=False) < _first(d, short, poster=True)


async def test_a_poster_waits_for_the_encode_that_takes_its_jobs_slot(
    rigs, clip_h264: Path, monkeypatch
) -> None:
    """The slot a done job frees is taken by the next queued one a moment later (a
    claim in the store): the poster must not slip in between."""
    d, short, long = await _short_done_beside_a_long_one(rigs, clip_h264, monkeypatch, queued=True)
    assert _first(d, short, poster=False) < _first(d, long, poster=False)
    assert _first(d, long, poster=False) < _first(d, short, poster=True)


async def test_a_poster_waits_no_longer_than_its_bound(rigs, clip_h264: Path, monkeypatch) -> None:
    """A queue that keeps every core busy for hours delays a poster by POSTER_WAIT_MAX_S
    at most: then it is made anyway."""
    monkeypatch.setattr(pool_module, "POSTER_WAIT_MAX_S", 0.5)
    d, short, long = await _short_done_beside_a_long_one(rigs, clip_h264, monkeypatch)
    assert _first(d, short, poster=True) < _first(d, long, poster=False)


async def test_with_a_core_to_spare_the_poster_is_made_at_once(
    rigs, clip_h264: Path, monkeypatch
) -> None:
    d, short, long = await _short_done_beside_a_long_one(rigs, clip_h264, monkeypatch, cores=2)
    assert _first(d, short, poster=True) < _first(d, long, poster=False)
