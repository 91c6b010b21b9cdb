"""Resumable uploads over HTTP: the tus 1.0 protocol (core, creation,
creation-with-upload, termination, expiration, checksum) under /api/uploads.

This module only reads requests and writes answers; vidd/uploads.py owns the files, the
rows and the rules. The final PATCH hands the file to the intake like the multipart path
(vidd/web/upload.py) and answers 204 with `Vidd-Job-Id` and `Vidd-Job-Status` headers,
also for a file that is not a video (`Vidd-Job-Status: rejected`): the upload itself
succeeded, and tus clients treat any error answer as a failed upload to retry.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import formatdate

from aiohttp import ClientPayloadError, StreamReader, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from ..job import Job
from ..uploads import (
    CHECKSUMS,
    Checksum,
    ChecksumMismatch,
    OffsetMismatch,
    PastLength,
    TooManyOpen,
    Upload,
    UploadGone,
    Uploads,
)
from . import upload as multipart
from .errors import ApiError
from .keys import CONFIG, COUNTERS, SERVICES
from .security import session_cookie

log = logging.getLogger(__name__)

VERSION = "1.0.0"
EXTENSIONS = "creation,creation-with-upload,termination,expiration,checksum"
OCTETS = "application/offset+octet-stream"
CHUNK = multipart.CHUNK  # what one write takes: at most two are held per PATCH
MAX_METADATA_CHARS = 4096
MAX_METADATA_PAIRS = 16
TUS_HEADERS = {"Tus-Resumable": VERSION}
NO_STORE = {"Cache-Control": "no-store"}


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_route("OPTIONS", "/api/uploads", options)
    r.add_post("/api/uploads", create)
    # GET answers JSON; HEAD is tus's (aiohttp routes both to this handler).
    r.add_get("/api/uploads/{id}", show)
    r.add_patch("/api/uploads/{id}", patch)
    r.add_delete("/api/uploads/{id}", delete)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _tus(handler: Handler) -> Handler:
    """Every tus answer, errors included, says the protocol version."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            resp = await handler(request)
        except ApiError as e:
            e.headers.update(TUS_HEADERS)
            raise
        resp.headers.update(TUS_HEADERS)
        return resp

    return wrapped


def _check_version(request: web.Request, *, required: bool = True) -> None:
    given = request.headers.get("Tus-Resumable")
    if given is None and not required:
        return
    if given != VERSION:
        raise ApiError(
            412,
            "unsupported_version",
            f"this server speaks tus {VERSION}: send Tus-Resumable: {VERSION}",
            {"Tus-Version": VERSION},
        )


def _uploads(request: web.Request) -> Uploads:
    return request.app[SERVICES].uploads


@_tus
async def options(request: web.Request) -> web.StreamResponse:
    """What this server supports (no Tus-Resumable needed, as the protocol says)."""
    return web.Response(
        status=204,
        headers={
            "Tus-Version": VERSION,
            "Tus-Extension": EXTENSIONS,
            "Tus-Max-Size": str(request.app[CONFIG].web.max_upload_bytes),
            "Tus-Checksum-Algorithm": ",".join(CHECKSUMS),
        },
    )


@_tus
async def create(request: web.Request) -> web.StreamResponse:
    """POST: a new upload, checked whole before anything is stored; with a body
    (creation-with-upload), its first bytes too."""
    _check_version(request)
    cfg = request.app[CONFIG]
    if "Upload-Defer-Length" in request.headers:
        raise ApiError(
            400, "bad_request", "Upload-Defer-Length is not supported: send Upload-Length"
        )
    length = _number(request, "Upload-Length")
    if length > cfg.web.max_upload_bytes:
        raise multipart.too_large(cfg.web.max_upload_bytes)
    meta = _metadata(request.headers.get("Upload-Metadata", ""))
    profile = (meta.get("profile") or "").strip() or None
    multipart.check_profile(request, profile)
    name = multipart.display_name(meta.get("filename") or meta.get("name"))
    has_body = (request.content_length or 0) > 0 or request.headers.get(
        hdrs.TRANSFER_ENCODING, ""
    ).lower() == "chunked"
    if has_body:
        _check_octets(request)
    await multipart.check_room(request)
    with multipart.disk_full_answers():
        try:
            upload = await _uploads(request).create(length, name, profile, _owner(request))
        except TooManyOpen as e:
            raise ApiError(429, "too_many_uploads", str(e), retry_after=multipart.RETRY_S) from None
    headers = {"Location": f"/api/uploads/{upload.id}", **_expires(upload)}
    if has_body or length == 0:
        upload, job = await _write(request, upload.id, 0)
        headers |= _offset_headers(upload, job)
    return web.Response(status=201, headers=headers)


@_tus
async def show(request: web.Request) -> web.StreamResponse:
    """HEAD (tus): the offset to resume from. GET: the same as JSON, with the job once
    the upload became one (for a client whose final answer was lost)."""
    _check_version(request, required=False)  # a plain GET or HEAD needs no tus header
    upload = await _find(request)
    if request.method == hdrs.METH_HEAD:
        return web.Response(status=200, headers={**_state_headers(upload), **NO_STORE})
    job = await request.app[SERVICES].store.get(upload.job_id) if upload.job_id else None
    body = {
        "id": upload.id,
        "offset": upload.received,
        "length": upload.length,
        "name": upload.name,
        "profile": upload.profile,
        "expires_at": _iso(upload.expires_at),
        "job_id": upload.job_id,
        "job_status": job.status.value if job else None,
    }
    return web.json_response(body, headers={**_state_headers(upload), **NO_STORE})


@_tus
async def patch(request: web.Request) -> web.StreamResponse:
    """PATCH: bytes at the offset the client names, streamed to the partial file."""
    _check_version(request)
    _check_octets(request)
    offset = _number(request, "Upload-Offset")
    upload, job = await _write(request, request.match_info["id"], offset)
    return web.Response(status=204, headers=_offset_headers(upload, job))


@_tus
async def delete(request: web.Request) -> web.StreamResponse:
    """DELETE (termination): the partial file and the row go; a job it became stays."""
    _check_version(request)
    try:
        await _uploads(request).delete(request.match_info["id"])
    except UploadGone:
        raise _gone() from None
    return web.Response(status=204)


# --- the body ----------------------------------------------------------------------------


async def _write(request: web.Request, upload_id: str, offset: int) -> tuple[Upload, Job | None]:
    checksum = _checksum(request)
    cfg = request.app[CONFIG].web
    pace = multipart.Pace(cfg.body_timeout_s, cfg.min_body_rate)
    counters = request.app[COUNTERS]

    failed: list[BaseException] = []

    async def read() -> bytes:
        """Up to CHUNK bytes: small network pieces gathered into one write. When the
        body breaks off, what was gathered is still returned (and kept); the error
        comes with the next call. So does a cancel: aiohttp cancels the handler when
        the client goes away, just as the last bytes arrive."""
        if failed:
            raise failed[0]
        buf = bytearray()
        try:
            while len(buf) < CHUNK:
                piece = await pace.next(request.content.read(CHUNK - len(buf)))
                if not piece:
                    break
                buf += piece
        except (Exception, asyncio.CancelledError) as e:
            buf += _leftover(request.content)
            if not buf:
                raise
            failed.append(e)
        counters.bytes_uploaded += len(buf)
        return bytes(buf)

    try:
        with multipart.disk_full_answers():
            return await _uploads(request).write(
                upload_id, offset, read, checksum, functools.partial(multipart.admit, request)
            )
    except UploadGone:
        raise _gone() from None
    except OffsetMismatch as e:
        raise ApiError(
            409,
            "offset_mismatch",
            f"the upload has {e.received} bytes: send Upload-Offset {e.received}",
            {"Upload-Offset": str(e.received)},
        ) from None
    except PastLength as e:
        raise ApiError(400, "bad_request", str(e)) from None
    except ChecksumMismatch as e:
        raise ApiError(460, "checksum_mismatch", f"{e}; send this part again") from None
    except (ConnectionError, ClientPayloadError, web.RequestPayloadError, HttpProcessingError) as e:
        # What arrived is kept; the client resumes from the offset HEAD reports.
        log.info("upload %s: body cut off (%s); resumable", upload_id, type(e).__name__)
        raise ApiError(
            400, "aborted", "the body did not complete; resume from HEAD's offset"
        ) from None


def _leftover(content: StreamReader) -> bytes:
    """What arrived before the connection broke. aiohttp keeps it buffered, but its read
    methods raise the connection's error first (aiohttp/streams.py), and a tus server
    must keep every byte that arrived: so the buffer is drained with the private reader."""
    drain = getattr(content, "_read_nowait", None)
    try:
        return bytes(drain(-1)) if drain is not None else b""
    except Exception:
        return b""


def _check_octets(request: web.Request) -> None:
    if request.content_type != OCTETS:
        raise ApiError(415, "unsupported_media_type", f"send the bytes as Content-Type: {OCTETS}")


def _checksum(request: web.Request) -> Checksum | None:
    header = request.headers.get("Upload-Checksum")
    if header is None:
        return None
    try:
        return Checksum.parse(header)
    except ValueError as e:
        raise ApiError(400, "bad_checksum", f"Upload-Checksum: {e}") from None


# --- headers ------------------------------------------------------------------------------


def _number(request: web.Request, name: str) -> int:
    raw = request.headers.get(name)
    if raw is None:
        raise ApiError(400, "bad_request", f"{name} is required")
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19:
        raise ApiError(400, "bad_request", f"{name} must be a non-negative integer")
    return int(raw)


def _metadata(header: str) -> dict[str, str]:
    """`key base64,key base64`: the values vidd reads (filename, profile), decoded."""
    if len(header) > MAX_METADATA_CHARS:
        raise ApiError(400, "bad_request", f"Upload-Metadata is over {MAX_METADATA_CHARS} chars")
    pairs = [p.strip() for p in header.split(",") if p.strip()]
    if len(pairs) > MAX_METADATA_PAIRS:
        raise ApiError(400, "bad_request", f"at most {MAX_METADATA_PAIRS} Upload-Metadata keys")
    found: dict[str, str] = {}
    for pair in pairs:
        key, _, value = pair.partition(" ")
        try:
            found[key] = base64.b64decode(value.strip(), validate=True).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            raise ApiError(400, "bad_request", f"Upload-Metadata {key!r} is not base64") from None
    return found


def _owner(request: web.Request) -> str:
    """Who made the upload, for the record: a hash of the session, never the secret."""
    if request.headers.get(hdrs.AUTHORIZATION, "").lower().startswith("bearer "):
        return "bearer"
    if cookie := session_cookie(request):
        return "session:" + hashlib.sha256(cookie.encode()).hexdigest()[:16]
    return "anonymous"


def _expires(upload: Upload) -> dict[str, str]:
    return {"Upload-Expires": formatdate(upload.expires_at, usegmt=True)}


def _state_headers(upload: Upload) -> dict[str, str]:
    return {
        "Upload-Offset": str(upload.received),
        "Upload-Length": str(upload.length),
        **_expires(upload),
    }


def _offset_headers(upload: Upload, job: Job | None) -> dict[str, str]:
    headers = {"Upload-Offset": str(upload.received), **_expires(upload)}
    if job is not None:
        headers |= {multipart.JOB_ID_HEADER: job.id, "Vidd-Job-Status": job.status.value}
    return headers


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


async def _find(request: web.Request) -> Upload:
    try:
        return await _uploads(request).find(request.match_info["id"])
    except UploadGone:
        raise _gone() from None


def _gone() -> ApiError:
    return ApiError(404, "not_found", "no such upload (deleted, or expired): start a new one")
