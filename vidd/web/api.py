"""The jobs API: list, get, cancel, retry and delete. Each handler parses the request,
calls one operation of the job life cycle and renders its answer; refusals become 404
and 409."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from ..job import Job, Status, is_valid_id
from ..lifecycle import NotFound, Refused
from ..services import Services
from .errors import ApiError
from .keys import PAGES, SERVICES

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_RETRY_BODY = 1024


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_get("/api/jobs", list_jobs)
    r.add_get("/api/jobs/{id}", get_job)
    r.add_post("/api/jobs/{id}/cancel", cancel_job)
    r.add_post("/api/jobs/{id}/retry", retry_job)
    r.add_delete("/api/jobs/{id}", delete_job)


@asynccontextmanager
async def answers() -> AsyncIterator[None]:
    """The life cycle's refusals, as HTTP answers."""
    try:
        yield
    except NotFound as e:
        raise ApiError(404, "not_found", str(e)) from None
    except Refused as e:
        raise ApiError(409, "conflict", str(e)) from None


async def find_job(svc: Services, job_id: str) -> Job:
    async with answers():
        return await svc.jobs.get(job_id)


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
    jobs = await svc.store.list_jobs(status=status, limit=limit, before=before)
    # A full page may have more after it; the client passes this back as `before`.
    next_before = jobs[-1].id if len(jobs) == limit else None
    body = json.dumps({"jobs": [j.to_json() for j in jobs], "next_before": next_before}).encode()
    cache.put(key, body, generation)
    return web.Response(body=body, content_type="application/json")


async def get_job(request: web.Request) -> web.Response:
    job = await find_job(request.app[SERVICES], request.match_info["id"])
    return web.json_response(job.to_json(with_log=True))


async def cancel_job(request: web.Request) -> web.Response:
    async with answers():
        job = await request.app[SERVICES].jobs.cancel(request.match_info["id"])
    return web.json_response(job.to_json())


async def retry_job(request: web.Request) -> web.Response:
    profile = await _retry_profile(request)
    async with answers():
        job = await request.app[SERVICES].jobs.retry(request.match_info["id"], profile)
    return web.json_response(job.to_json())


async def _retry_profile(request: web.Request) -> str | None:
    """The optional body of a retry: {"profile": NAME}, to run it with another profile."""
    if not request.body_exists:
        return None
    if (request.content_length or 0) > MAX_RETRY_BODY:
        raise ApiError(413, "too_large", f"a retry's body is at most {MAX_RETRY_BODY} bytes")
    raw = await request.content.read(MAX_RETRY_BODY + 1)
    if len(raw) > MAX_RETRY_BODY:
        raise ApiError(413, "too_large", f"a retry's body is at most {MAX_RETRY_BODY} bytes")
    if not raw.strip():
        return None
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "bad_request", 'the body must be JSON: {"profile": NAME}') from None
    if not isinstance(body, dict) or set(body) - {"profile"}:
        raise ApiError(400, "bad_request", 'the body may only hold {"profile": NAME}')
    profile = body.get("profile")
    if profile is None:
        return None
    profiles = request.app[SERVICES].config.encode.profiles
    if not isinstance(profile, str) or profile not in profiles:
        choices = ", ".join(profiles)
        raise ApiError(400, "unknown_profile", f"profile must be one of: {choices}")
    return profile


async def delete_job(request: web.Request) -> web.Response:
    async with answers():
        job = await request.app[SERVICES].jobs.delete(request.match_info["id"])
    return web.json_response({"deleted": job.id})
