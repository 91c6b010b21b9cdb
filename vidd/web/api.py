"""The jobs API: list, get, cancel, retry and delete. The store decides which state
changes are legal; this module turns its refusals into 404 and 409 answers."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from aiohttp import web

from ..daemon import SERVICES, Services
from ..job import IllegalTransition, Job, Status, is_valid_id
from .errors import ApiError
from .keys import PAGES

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_get("/api/jobs", list_jobs)
    r.add_get("/api/jobs/{id}", get_job)
    r.add_post("/api/jobs/{id}/cancel", cancel_job)
    r.add_post("/api/jobs/{id}/retry", retry_job)
    r.add_delete("/api/jobs/{id}", delete_job)


def _not_found(job_id: str) -> ApiError:
    return ApiError(404, "not_found", f"no job with id {job_id[:40]!r}")


async def find_job(svc: Services, job_id: str) -> Job:
    if not is_valid_id(job_id):
        raise _not_found(job_id)
    job = await svc.store.get(job_id)
    if job is None:
        raise _not_found(job_id)
    return job


def _conflict(job: Job, action: str) -> ApiError:
    return ApiError(409, "conflict", f"a {job.status} job can't be {action}")


async def list_jobs(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    q = request.query
    status: Status | None = None
    if "status" in q:
        try:
            status = Status(q["status"])
        except ValueError:
            choices = ", ".join(s.value for s in Status)
            raise ApiError(400, "bad_request", f"status must be one of {choices}") from None
    try:
        limit = int(q.get("limit", DEFAULT_LIMIT))
    except ValueError:
        raise ApiError(400, "bad_request", "limit must be a whole number") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(400, "bad_request", f"limit must be between 1 and {MAX_LIMIT}")
    key = (status, limit, q.get("before"))
    cache = request.app[PAGES]
    generation = cache.generation
    if (body := cache.get(key)) is not None:
        return web.Response(body=body, content_type="application/json")
    before: int | None = None
    if "before" in q:
        # `before` is the id of the last job of the previous page.
        seq = await svc.store.seq_of(q["before"]) if is_valid_id(q["before"]) else None
        if seq is None:
            raise ApiError(400, "bad_request", "before must be the id of a job")
        before = seq
    jobs = await svc.store.list(status=status, limit=limit, before=before)
    # A full page may have more after it; the client passes this back as `before`.
    next_before = jobs[-1].id if len(jobs) == limit else None
    body = json.dumps({"jobs": [j.to_json() for j in jobs], "next_before": next_before}).encode()
    cache.put(key, body, generation)
    return web.Response(body=body, content_type="application/json")


async def get_job(request: web.Request) -> web.Response:
    job = await find_job(request.app[SERVICES], request.match_info["id"])
    return web.json_response(job.to_json(with_log=True))


async def cancel_job(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    job = await find_job(svc, request.match_info["id"])
    if not await _cancel(svc, job):
        raise _conflict(job, "cancelled")
    return web.json_response((await find_job(svc, job.id)).to_json())


async def _cancel(svc: Services, job: Job) -> bool:
    """Cancel a queued or running job; False when its state doesn't allow it."""
    for _ in range(3):  # the pool may claim, or finish, the job while we look at it
        if job.status is Status.RUNNING:
            if await svc.pool.cancel(job.id):  # only the pool cancels a running job
                return True
        elif job.status is Status.QUEUED:
            try:
                await svc.store.transition(job.id, Status.CANCELLED, expect=Status.QUEUED)
                return True
            except KeyError:
                raise _not_found(job.id) from None
            except IllegalTransition:
                pass
        else:
            return False
        job = await find_job(svc, job.id)
    return False


async def retry_job(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    job = await find_job(svc, request.match_info["id"])
    # running -> queued is legal for the pool (shutdown), but not a retry.
    if job.status not in (Status.FAILED, Status.CANCELLED):
        raise _conflict(job, "retried")
    try:
        job = await svc.store.transition(job.id, Status.QUEUED)
    except KeyError:
        raise _not_found(job.id) from None
    except IllegalTransition as e:
        raise ApiError(409, "conflict", f"a {e.current} job can't be retried") from None
    return web.json_response(job.to_json())


async def delete_job(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    job = await find_job(svc, request.match_info["id"])
    if job.status in (Status.QUEUED, Status.RUNNING):
        await _cancel(svc, job)
    if not await svc.store.delete(job.id):
        raise _not_found(job.id)
    # Claimed between the cancel and the delete: stop it, so it writes nothing more.
    await svc.pool.cancel(job.id)
    storage = svc.config.storage
    for path in (
        storage.sources_dir / job.source_file,
        storage.videos_dir / f"{job.id}.mp4",
        storage.videos_dir / f"{job.id}.jpg",
    ):
        _remove(path)
    log.info("job %s: deleted", job.id)
    return web.json_response({"deleted": job.id})


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as e:  # the job is gone either way; say what stayed behind
        log.warning("could not remove %s: %s", path, e)
