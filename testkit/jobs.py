"""Jobs for tests: a factory with everyday defaults, and a rejected job added through a
test client's store."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vidd.daemon import SERVICES
from vidd.job import Job, JobError, MediaInfo, Status, new_id, now
from vidd.store import Store

if TYPE_CHECKING:
    from aiohttp.test_utils import TestClient


def make_job(
    *,
    id: str | None = None,
    name: str = "clip.avi",
    status: Status = Status.QUEUED,
    profile: str = "web",
    origin: str = "upload",
    source_ext: str = ".avi",
    created_at: datetime | None = None,
    **fields: Any,
) -> Job:
    """A queued upload of clip.avi for the `web` profile, with a fresh id and created now;
    any keyword replaces a default, and the other fields of Job can be given too."""
    return Job(
        id=new_id() if id is None else id,
        name=name,
        status=status,
        profile=profile,
        origin=origin,
        source_ext=source_ext,
        created_at=now() if created_at is None else created_at,
        **fields,
    )


async def add_rejected(client: TestClient[Any, Any], name: str = "notes.txt") -> Job:
    """A rejected upload (not a video), added straight to the app's store."""
    job = make_job(
        name=name,
        status=Status.REJECTED,
        source_ext=".txt",
        finished_at=now(),
        error=JobError("not_video", "no video stream"),
    )
    added: Job = await client.app[SERVICES].store.add(job)
    return added


# --- a store filled before its daemon starts (the page's browser tests) ---

ENDED_STATES = (Status.DONE, Status.FAILED, Status.REJECTED, Status.CANCELLED)


def ended_job(i: int, status: Status, *, name: str | None = None, **fields: Any) -> Job:
    """Job number `i` in a finished state, with what that state carries: an output for
    done, an error for failed and rejected; created `i` seconds after the first."""
    base = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=i)
    extra: dict[str, Any] = {"finished_at": base + timedelta(seconds=1)}
    source = MediaInfo(size=1_000_000 + i, duration=2.0, width=320, height=240)
    if status is Status.DONE:
        extra["source"] = source
        extra["output"] = MediaInfo(
            size=400_000 + i,
            duration=2.0,
            width=320,
            height=240,
            video_codec="h264",
            audio_codecs=("aac",),
        )
    elif status is Status.FAILED:
        extra["source"] = source
        extra["error"] = JobError("exit_code", "HandBrakeCLI exited with code 3")
        extra["log_tail"] = "[00:00:01] libdvdnav: Using dvdnav\nEncode failed (error 3)"
    elif status is Status.REJECTED:
        extra["error"] = JobError("not_video", "no video stream")
    return make_job(
        name=name or f"bulk-{i:04d}-{status}.avi",
        status=status,
        created_at=base,
        **{**extra, **fields},
    )


def mixed_jobs(count: int) -> list[Job]:
    """`count` finished jobs, the states taking turns: done, failed, rejected, cancelled."""
    return [ended_job(i, ENDED_STATES[i % len(ENDED_STATES)]) for i in range(count)]


def fill_store(db_path: Path, jobs: Iterable[Job]) -> int:
    """Put `jobs` straight into the SQLite file of a vidd that has not started yet."""

    async def fill() -> int:
        async with Store(db_path) as store:
            return await store.add_many(jobs)

    return asyncio.run(fill())
