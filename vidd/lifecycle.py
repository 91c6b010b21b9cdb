"""What a person can do to a job: cancel it, retry it, delete it with its files. One
operation per intent, so that a web handler parses, calls one of these and renders."""

from __future__ import annotations

import logging

from .job import IllegalTransition, Job, Status, is_valid_id
from .layout import Layout
from .pool import Pool
from .store import Store

log = logging.getLogger(__name__)


class NotFound(Exception):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id[:40]!r}")
        self.job_id = job_id


class Refused(Exception):
    """The job's state does not allow what was asked."""

    def __init__(self, job: Job, action: str, why: str = "") -> None:
        super().__init__(why or f"a {job.status} job can't be {action}")
        self.job = job


class Lifecycle:
    def __init__(self, store: Store, pool: Pool, layout: Layout) -> None:
        self.store = store
        self.pool = pool
        self.layout = layout

    def __repr__(self) -> str:
        return f"<Lifecycle {self.store!r}>"

    async def get(self, job_id: str) -> Job:
        if not is_valid_id(job_id):
            raise NotFound(job_id)
        job = await self.store.get(job_id)
        if job is None:
            raise NotFound(job_id)
        return job

    async def cancel(self, job_id: str) -> Job:
        """A queued job is cancelled at once; a running one once its encode is reaped."""
        job = await self.get(job_id)
        try:
            cancelled = await self.pool.cancel(job.id)
        except KeyError:
            raise NotFound(job_id) from None
        if not cancelled:
            raise Refused(await self.get(job_id), "cancelled")
        return await self.get(job_id)

    async def retry(self, job_id: str, profile: str | None = None) -> Job:
        """Back to the queue: only a failed or cancelled job, with another profile when
        one is given (the caller checks that it exists)."""
        job = await self.get(job_id)
        try:
            return await self.store.retry(job.id, profile)
        except KeyError:
            raise NotFound(job_id) from None
        except IllegalTransition as e:
            raise Refused(job, "retried", f"a {e.current} job can't be retried") from None

    async def delete(self, job_id: str) -> Job:
        """Remove the job's files, stop it if it runs, and remove its record.

        Files first: a crash in between leaves a job whose files are gone (deleting it
        again finishes the work), never a file the next start would adopt as new.
        A running encode may still read its unlinked source; it is stopped next.
        """
        job = await self.get(job_id)
        if job.status is Status.ADMITTING:
            raise Refused(job, "deleted", "the file is still being taken in; try again shortly")
        self._remove_files(job)
        if not await self.pool.delete(job.id):
            raise NotFound(job_id)
        self._remove_files(job)  # an output that landed while the encode was stopped
        log.info("job %s: deleted", job.id)
        return job

    def _remove_files(self, job: Job) -> None:
        for path in self.layout.files_of(job):
            try:
                path.unlink(missing_ok=True)
            except OSError as e:  # say what stayed behind
                log.warning("job %s: could not remove %s: %s", job.id, path.name, e)
