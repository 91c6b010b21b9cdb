"""The routes remote workers use (contracts: /api/workers/attempts/<attempt>/...), and
GET /api/workers for people.

A worker's credential is its attempt's token (Bearer), not web.token: these paths are
in security.PUBLIC_PREFIXES. Browsers never call them, so a request carrying Origin or
Sec-Fetch-Site is refused. Unknown attempt and wrong token get the same 401. JSON
bodies are at most 64 KiB; the output is streamed to tmp/ in bounded chunks under the
disk guard, then verified and recorded by the remote encoder (remote.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import unicodedata
from pathlib import Path
from typing import Any

import aiofiles
from aiohttp import ClientPayloadError, hdrs, web

from .. import disk
from ..remote import BadOutput, NotLive, RemoteEncoder, StopAttempt, Unauthorized
from .bodies import read_whole
from .errors import ApiError
from .files import FileAnswer
from .keys import SERVICES
from .upload import Pace, disk_full_answers

log = logging.getLogger(__name__)

BASE = "/api/workers/attempts/"
# Any segment: a malformed id gets the same 401 as an unknown one (no oracle, no 404).
ATTEMPT = "{attempt}"
MAX_JSON_BYTES = 64 * 1024
MAX_WORKER_NAME = 100
MAX_CODE = 40
CODE = re.compile(r"[A-Za-z0-9_.-]+", re.ASCII)
MAX_MESSAGE = 1000
MAX_TAIL = 64 * 1024
CHUNK = 1 << 20
BROWSER_HEADERS = (hdrs.ORIGIN, "Sec-Fetch-Site")


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_get("/api/workers", list_workers)
    r.add_post(f"{BASE}{ATTEMPT}/claim", claim)
    r.add_get(f"{BASE}{ATTEMPT}/source", source)
    r.add_post(f"{BASE}{ATTEMPT}/progress", progress)
    r.add_post(f"{BASE}{ATTEMPT}/log", log_tail)
    r.add_put(f"{BASE}{ATTEMPT}/output", output)
    r.add_post(f"{BASE}{ATTEMPT}/fail", fail)
    r.add_post(f"{BASE}{ATTEMPT}/release", release)


# --- GET /api/workers (behind web.token, like the rest of /api) --------------------------


async def list_workers(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    remote = svc.remote
    seen = await remote.workers() if remote is not None else []
    return web.json_response(
        {
            "mode": svc.config.workers.mode,
            "broker": svc.broker,
            "workers": [
                {"name": w.name, "job": w.job, "last_seen_s": round(w.last_seen_s, 1)} for w in seen
            ],
        },
        headers={"Cache-Control": "no-store"},
    )


# --- what every worker route checks first ------------------------------------------------


def _remote(request: web.Request) -> RemoteEncoder:
    """The remote encoder; with local encodes there is no attempt to name (401)."""
    for name in BROWSER_HEADERS:
        if name in request.headers:
            raise ApiError(403, "forbidden", "browsers may not call the worker routes")
    remote = request.app[SERVICES].remote
    if remote is None:
        raise _unauthorized()
    return remote


def _unauthorized() -> ApiError:
    return ApiError(401, "unauthorized", "a valid attempt token is required")


def _token(request: web.Request) -> str:
    scheme, _, given = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise _unauthorized()
    return given.strip()


@contextlib.contextmanager
def _answers() -> Any:
    """The remote encoder's refusals as HTTP errors."""
    try:
        yield
    except Unauthorized:
        raise _unauthorized() from None
    except NotLive as e:
        raise ApiError(409, e.code, _NOT_LIVE.get(e.code, "the attempt is not live")) from None
    except StopAttempt:
        raise ApiError(410, "stop", "stop now: the attempt is no longer this job's") from None
    except BadOutput as e:
        raise ApiError(422, e.code, e.message) from None


_NOT_LIVE = {
    "superseded": "the attempt is no longer its job's live one",
    "cancelled": "the job was cancelled or deleted",
    "claimed": "the attempt was claimed already",
}


async def _json(request: web.Request) -> dict[str, Any]:
    """The JSON object body, at most 64 KiB (413), else 400."""
    body = await read_whole(request, MAX_JSON_BYTES, f"the body is over {MAX_JSON_BYTES} bytes")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "bad_request", "the body is not JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "bad_request", "the body is not a JSON object")
    return data


def _text(data: dict[str, Any], key: str, most: int, *, least: int = 0) -> str:
    value = data.get(key, "" if least == 0 else None)
    if not isinstance(value, str) or not least <= len(value) <= most:
        raise ApiError(
            400, "bad_request", f"{key!r}: expected a string of {least}-{most} characters"
        )
    return value


def _number(
    data: dict[str, Any], key: str, *, most: float | None = None, null: bool
) -> float | None:
    value = data.get(key)
    if value is None and null:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
        or (most is not None and value > most)
    ):
        raise ApiError(400, "bad_request", f"{key!r}: expected a number in range")
    return float(value)


# --- the routes ---------------------------------------------------------------------------


async def claim(request: web.Request) -> web.Response:
    remote = _remote(request)
    token = _token(request)
    data = await _json(request)
    worker = _text(data, "worker", MAX_WORKER_NAME, least=1)
    if not worker.strip() or any(unicodedata.category(c).startswith("C") for c in worker):
        raise ApiError(400, "bad_request", "'worker': expected a printable name")
    with _answers():
        answer = await remote.claim(request.match_info["attempt"], token, worker)
    return web.json_response(answer)


async def source(request: web.Request) -> web.StreamResponse:
    remote = _remote(request)
    token = _token(request)
    with _answers():
        _, job = await remote.claimed(request.match_info["attempt"], token)
    path = remote.source_path(job)
    if not path.is_file():
        raise ApiError(404, "not_found", "the job's source file is missing")
    return FileAnswer(path, headers={"Content-Type": "application/octet-stream"})


async def progress(request: web.Request) -> web.Response:
    remote = _remote(request)
    token = _token(request)
    data = await _json(request)
    done = _number(data, "progress", most=1.0, null=False)
    assert done is not None
    fps = _number(data, "fps", null=True)
    eta_s = _number(data, "eta_s", null=True)
    with _answers():
        await remote.heartbeat(request.match_info["attempt"], token, done, fps, eta_s)
    return web.Response(status=204)


async def log_tail(request: web.Request) -> web.Response:
    remote = _remote(request)
    token = _token(request)
    data = await _json(request)
    tail = _text(data, "tail", MAX_TAIL)
    with _answers():
        await remote.log_tail(request.match_info["attempt"], token, tail)
    return web.Response(status=204)


async def fail(request: web.Request) -> web.Response:
    remote = _remote(request)
    token = _token(request)
    data = await _json(request)
    code = _text(data, "code", MAX_CODE, least=1)
    if not CODE.fullmatch(code):
        raise ApiError(400, "bad_request", "'code': expected letters, digits, '_', '.' or '-'")
    message = _text(data, "message", MAX_MESSAGE)
    tail = _text(data, "log_tail", MAX_TAIL)
    with _answers():
        await remote.fail(request.match_info["attempt"], token, code, message, tail)
    return web.Response(status=204)


async def release(request: web.Request) -> web.Response:
    """A stopping worker hands its attempt back: the job is dispatched again at once."""
    remote = _remote(request)
    token = _token(request)
    with _answers():
        await remote.release(request.match_info["attempt"], token)
    return web.Response(status=204)


async def output(request: web.Request) -> web.Response:
    """The worker's MP4: refused before a byte is read unless the attempt is live, then
    streamed to tmp/ under the disk guard, verified, moved to videos/ and recorded."""
    remote = _remote(request)
    token = _token(request)
    length = request.content_length
    if length is None:
        raise ApiError(411, "length_required", "send the output with a Content-Length")
    if length > remote.max_output_bytes:
        raise ApiError(
            413, "too_large", f"the output is over the limit of {remote.max_output_bytes} bytes"
        )
    with _answers():
        attempt, _ = await remote.claimed(request.match_info["attempt"], token)
    path = remote.output_path(attempt)
    svc = request.app[SERVICES]
    try:
        with disk_full_answers(), svc.disk.reserve(length) as reservation:
            await _receive(request, path, length, reservation)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    with _answers():
        try:
            job = await remote.accept_output(attempt, path)
        except TimeoutError:
            raise ApiError(
                503, "unavailable", "the output is in, but its record is late; ask again"
            ) from None
    if job is None:
        raise ApiError(409, "cancelled", _NOT_LIVE["cancelled"])
    return web.json_response({"status": str(job.status)})


async def _receive(
    request: web.Request, path: Path, length: int, reservation: disk.Reservation
) -> None:
    cfg = request.app[SERVICES].config
    pace = Pace(cfg.web.body_timeout_s, cfg.web.min_body_rate)
    written = 0
    try:
        async with aiofiles.open(path, "wb") as f:
            while chunk := await pace.next(request.content.read(CHUNK)):
                written += len(chunk)
                if written > length:
                    raise ApiError(400, "bad_request", "the body is longer than its Content-Length")
                reservation.wrote(len(chunk))
                await f.write(chunk)
    except (ConnectionError, ClientPayloadError, web.RequestPayloadError):
        raise ApiError(400, "aborted", "the output did not arrive whole") from None
    # A full disk (ENOSPC) is answered 507 disk_full by the error middleware, as elsewhere.
    if written != length:
        raise ApiError(400, "aborted", "the output did not arrive whole")
