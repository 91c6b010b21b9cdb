"""Jobs for tests: a factory with everyday defaults, and a rejected job added through a
test client's store."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from vidd.daemon import SERVICES
from vidd.job import Job, JobError, Status, new_id, now

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
