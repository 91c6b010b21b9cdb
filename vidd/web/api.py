"""The jobs API: list, get, cancel, retry and delete. Each handler parses the request,
calls one operation of the job life cycle and renders its answer; refusals become 404
and 409."""

from __future__ import annotations

import json
import logging
import unicodedata
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from .. import log_lines
from ..job import Job, Status, is_valid_id
from ..lifecycle import NotFound, Refused
from ..services import Services
from .bodies import read_whole
from .errors import ApiError
from .keys import PAGES, SERVICES

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_RETRY_BODY = 1024
MIN_SEARCH_CHARS, MAX_SEARCH_CHARS = 2, 100


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_get("/api/jobs", list_jobs)
    r.add_get("/api/jobs/{id}", get_job)
    r.add_get("/api/jobs/{id}/log", get_log)
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
    """A page of jobs, newest first: `status` (a comma list), `q` (a name search),
    `before` and `limit`, with `total`, how many jobs match across all pages."""
    svc = request.app[SERVICES]
    q = request.query
    statuses = _statuses(q.getall("status", []))
    search = _search(q.getall("q", []))
    try:
        limit = int(q.get("limit", DEFAULT_LIMIT))
    except ValueError:
        raise ApiError(400, "bad_request", "limit must be a whole number") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(400, "bad_request", f"limit must be between 1 and {MAX_LIMIT}")
    key = (statuses, search, limit, q.get("before"))
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
    jobs = await svc.store.find_jobs(statuses=statuses, name=search, limit=limit, before=before)
    # A full page may have more after it; the client passes this back as `before`.
    next_before = jobs[-1].id if len(jobs) == limit else None
    total = cache.total((statuses, search))
    if total is None:
        counted = cache.counted
        total = await svc.store.count_jobs(statuses=statuses, name=search)
        cache.put_total((statuses, search), total, counted)
    page = {"jobs": [j.to_json() for j in jobs], "next_before": next_before, "total": total}
    body = json.dumps(page).encode()
    cache.put(key, body, generation)
    return web.Response(body=body, content_type="application/json")


def _statuses(values: list[str]) -> tuple[Status, ...]:
    """`status=failed,rejected` (or the parameter repeated): the states, in a fixed order."""
    wanted: set[Status] = set()
    for item in ",".join(values).split(",") if values else []:
        try:
            wanted.add(Status(item.strip()))
        except ValueError:
            choices = ", ".join(s.value for s in Status)
            raise ApiError(
                400, "bad_request", f"status must be one or more of {choices}, comma-separated"
            ) from None
    return tuple(s for s in Status if s in wanted)


def _search(values: list[str]) -> str:
    """`q`: the text a name must hold, without the spaces around it; empty is no search."""
    if len(values) > 1:
        raise ApiError(400, "bad_request", "give q once")
    text = values[0].strip() if values else ""
    if text and not MIN_SEARCH_CHARS <= len(text) <= MAX_SEARCH_CHARS:
        raise ApiError(
            400,
            "bad_request",
            f"q must be {MIN_SEARCH_CHARS} to {MAX_SEARCH_CHARS} characters long",
        )
    if any(unicodedata.category(c) == "Cc" for c in text):
        raise ApiError(400, "bad_request", "q must be plain text (no control characters)")
    return text


async def get_job(request: web.Request) -> web.Response:
    job = await find_job(request.app[SERVICES], request.match_info["id"])
    return web.json_response(job.to_json(with_log=True))


async def get_log(request: web.Request) -> web.Response:
    """HandBrake's lines that matter (and vidd's verdict), then the whole log tail."""
    job = await find_job(request.app[SERVICES], request.match_info["id"])
    verdict = job.error.message if job.error and job.status is not Status.CANCELLED else None
    return web.json_response(log_lines.view(job.log_tail, verdict).to_json())


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
    raw = await read_whole(
        request, MAX_RETRY_BODY, f"a retry's body is at most {MAX_RETRY_BODY} bytes"
    )
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
