"""The store: a real SQLite file, legal transitions only, atomic claims, index-backed reads."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from testkit.jobs import make_job
from vidd.job import TRANSITIONS, IllegalTransition, Job, JobError, MediaInfo, Status, now
from vidd.store import SCHEMA_VERSION, Store


def a_job(status: Status = Status.QUEUED, name: str = "clip.avi") -> Job:
    return make_job(
        name=name,
        status=status,
        origin="inbox",
        source=MediaInfo(size=10, duration=2.0, width=320, height=240, video_codec="mpeg4"),
        error=JobError("not_video", "text") if status is Status.REJECTED else None,
    )


@pytest.fixture
async def store(tmp_path: Path):
    async with Store(tmp_path / "vidd.db") as s:
        yield s


class Recorder:
    def __init__(self) -> None:
        self.changes: list[tuple[str, Status, bool]] = []
        self.deleted: list[str] = []

    def job_changed(self, job: Job, *, progress_only: bool) -> None:
        self.changes.append((job.id, job.status, progress_only))

    def job_deleted(self, job_id: str) -> None:
        self.deleted.append(job_id)


async def test_schema_is_versioned_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "vidd.db"
    async with Store(path):
        pass
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    async with Store(path) as again:  # opening twice migrates nothing and keeps data
        assert (await again.counts())["queued"] == 0


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "vidd.db"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(RuntimeError, match="newer"):
        async with Store(path):
            pass


async def _job_in(store: Store, status: Status) -> Job:
    """Walk a new job along legal transitions to `status`."""
    if status in (Status.REJECTED, Status.ADMITTING):
        return await store.add(a_job(status))
    job = await store.add(a_job())
    path = {
        Status.QUEUED: [],
        Status.RUNNING: [Status.RUNNING],
        Status.DONE: [Status.RUNNING, Status.DONE],
        Status.FAILED: [Status.RUNNING, Status.FAILED],
        Status.CANCELLED: [Status.CANCELLED],
    }[status]
    for step in path:
        job = await store.transition(job.id, step)
    assert job.status is status
    return job


@pytest.mark.parametrize("source", list(Status))
@pytest.mark.parametrize("target", list(Status))
async def test_only_legal_transitions(store: Store, source: Status, target: Status) -> None:
    job = await _job_in(store, source)
    if target in TRANSITIONS[source]:
        moved = await store.transition(job.id, target)
        assert moved.status is target
        assert (await store.get(job.id)).status is target  # type: ignore[union-attr]
    else:
        with pytest.raises(IllegalTransition):
            await store.transition(job.id, target)
        assert (await store.get(job.id)).status is source  # type: ignore[union-attr]


async def test_transition_of_a_missing_job(store: Store) -> None:
    with pytest.raises(KeyError):
        await store.transition("nope", Status.RUNNING)


async def test_done_records_output_and_failure_records_error(store: Store) -> None:
    job = await _job_in(store, Status.RUNNING)
    out = MediaInfo(
        size=99, duration=2.0, width=320, height=240, video_codec="h264", audio_codecs=("aac",)
    )
    done = await store.transition(job.id, Status.DONE, output=out, poster=True, log_tail="ok")
    data = done.to_json(with_log=True)
    assert data["output"]["url"] == f"/videos/{job.id}.mp4"
    assert data["output"]["poster_url"] == f"/videos/{job.id}.jpg"
    assert data["output"]["size"] == 99 and data["progress"] == 1
    assert data["log_tail"] == "ok" and data["finished_at"].endswith("Z")

    other = await _job_in(store, Status.RUNNING)
    failed = await store.transition(other.id, Status.FAILED, error=JobError("stalled", "stuck"))
    error = failed.to_json()["error"]
    assert error["code"] == "stalled" and error["detail"] == "stuck"  # message: plain words
    assert failed.to_json()["output"] is None
    retried = await store.transition(other.id, Status.QUEUED)
    assert retried.error is None and retried.started_at is None


async def test_claims_are_atomic_and_oldest_first(store: Store) -> None:
    ids = [(await store.add(a_job())).id for _ in range(20)]
    claims = await asyncio.gather(*(store.claim_next() for _ in range(25)))
    claimed = [j.id for j in claims if j is not None]
    assert sorted(claimed) == sorted(ids)  # each job exactly once, and 5 claims found nothing
    assert claims.count(None) == 5
    assert (await store.counts())["running"] == 20


async def test_queue_positions(store: Store) -> None:
    jobs = [await store.add(a_job()) for _ in range(5)]
    assert [j.queue_position for j in jobs] == [0, 1, 2, 3, 4]
    await store.claim_next()
    listed = await store.list_jobs(status=Status.QUEUED)
    assert [j.queue_position for j in listed] == [3, 2, 1, 0]
    got = await store.get(jobs[4].id)
    assert got is not None and got.queue_position == 3


async def test_list_pages_newest_first(store: Store) -> None:
    ids = [(await store.add(a_job())).id for _ in range(7)]
    first = await store.list_jobs(limit=3)
    assert [j.id for j in first] == ids[::-1][:3]
    second = await store.list_jobs(limit=3, before=first[-1].seq)
    assert [j.id for j in second] == ids[::-1][3:6]
    await store.add(a_job(Status.REJECTED))
    assert len(await store.list_jobs(status=Status.REJECTED)) == 1


async def test_counts_follow_every_change(store: Store) -> None:
    a = await store.add(a_job())
    b = await store.add(a_job())
    await store.add(a_job(Status.REJECTED))
    await store.transition(a.id, Status.RUNNING)
    await store.transition(a.id, Status.DONE)
    await store.delete(b.id)
    counts = await store.counts()
    assert counts == {
        "admitting": 0,
        "queued": 0,
        "running": 0,
        "done": 1,
        "failed": 0,
        "cancelled": 0,
        "rejected": 1,
    }


async def test_running_jobs_go_back_to_the_queue(store: Store) -> None:
    job = await _job_in(store, Status.RUNNING)
    await store.set_progress(job.id, 0.5, 30.0, 4.0)
    assert await store.requeue_interrupted() == [job.id]
    again = await store.get(job.id)
    assert again is not None and again.status is Status.QUEUED and again.progress == 0


async def test_listeners_hear_changes_progress_and_deletes(store: Store) -> None:
    rec = Recorder()
    unsubscribe = store.subscribe(rec)
    job = await store.add(a_job())
    await store.claim_next()
    await store.set_progress(job.id, 0.25, 10.0, 3.0)
    await store.delete(job.id)
    assert rec.changes == [
        (job.id, Status.QUEUED, False),
        (job.id, Status.RUNNING, False),
        (job.id, Status.RUNNING, True),
    ]
    assert rec.deleted == [job.id]
    unsubscribe()
    await store.add(a_job())
    assert len(rec.changes) == 3  # no longer listening


async def test_progress_only_touches_running_jobs(store: Store) -> None:
    job = await store.add(a_job())
    assert await store.set_progress(job.id, 0.5, None, None) is None


async def test_a_running_job_queued_unprobed_gets_its_source_facts_once(store: Store) -> None:
    found = MediaInfo(size=10, duration=2.0, width=320, height=240, video_codec="mpeg4")
    job = await store.add(dataclasses.replace(a_job(), source=None))
    assert await store.set_source(job.id, found) is None  # queued: not yet
    await store.claim_next()
    rec = Recorder()
    store.subscribe(rec)
    running = await store.set_source(job.id, found)
    assert running is not None and running.source == found
    assert rec.changes == [(job.id, Status.RUNNING, False)]  # the page hears of it
    other = dataclasses.replace(found, width=640)
    assert await store.set_source(job.id, other) is None  # it has them: kept
    again = await store.get(job.id)
    assert again is not None and again.source == found


async def test_reads_stay_index_backed_at_100k_jobs(tmp_path: Path) -> None:
    async with Store(tmp_path / "vidd.db") as store:
        t0 = now()
        statuses = [Status.DONE] * 8 + [Status.QUEUED, Status.FAILED]
        await store.add_many(
            Job(
                id=f"j{i}",
                name="x.avi",
                status=statuses[i % 10],
                profile="web",
                origin="inbox",
                source_ext=".avi",
                created_at=t0 + timedelta(seconds=i),
            )
            for i in range(100_000)
        )
        counts = await store.counts()
        assert counts["done"] == 80_000 and counts["queued"] == 10_000
        page = await store.list_jobs(limit=50)
        assert len(page) == 50 and page[0].id == "j99999"
        queued = await store.list_jobs(status=Status.QUEUED, limit=50)
        assert queued[0].queue_position == 9_999

    db = sqlite3.connect(tmp_path / "vidd.db")
    plans = {
        "list": "SELECT * FROM jobs ORDER BY seq DESC LIMIT 50",
        "filtered": "SELECT * FROM jobs WHERE status = 'failed' AND seq < 500 "
        "ORDER BY seq DESC LIMIT 50",
        "position": "SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND seq < 5000",
        "get": "SELECT * FROM jobs WHERE id = 'j5'",
        "counts": "SELECT status, n FROM job_counts",
    }
    for name, sql in plans.items():
        plan = " ".join(row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql))
        # No sort of the whole table, and no full scan except the rowid walk of the
        # unfiltered page, which is already in seq order and stops after LIMIT rows.
        assert "TEMP B-TREE" not in plan, f"{name}: {plan}"
        if name in ("filtered", "position", "get"):
            assert "USING" in plan and "INDEX" in plan, f"{name}: {plan}"
    db.close()


async def test_add_many_keeps_every_column_add_keeps(store: Store) -> None:
    out = MediaInfo(size=9, duration=2.0, width=32, height=24, video_codec="h264")
    whole = dataclasses.replace(
        a_job(Status.DONE),
        started_at=now(),
        finished_at=now(),
        progress=1.0,
        source=MediaInfo(size=10, duration=2.0, width=32, height=24, video_codec="mpeg4"),
        output=out,
        poster=True,
        error=None,
        log_tail="Encode done!",
    )
    assert await store.add_many([whole]) == 1
    back = await store.get(whole.id)
    assert back is not None
    assert dataclasses.replace(back, seq=0) == dataclasses.replace(whole, seq=0)


async def test_add_many_refuses_a_running_job_and_writes_nothing(store: Store) -> None:
    with pytest.raises(IllegalTransition):
        await store.add_many([a_job(), a_job(Status.RUNNING)])
    assert await store.list_jobs() == []
