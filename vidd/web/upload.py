"""POST /api/jobs: a multipart upload streamed into tmp/ in chunks, then handed to the
same `Intake.admit` as the inbox. Limits are enforced while reading, and a partial file
never outlives the request that wrote it."""

from __future__ import annotations

import asyncio
import logging
import secrets
from pathlib import Path

import aiofiles
import aiofiles.os
from aiohttp import BodyPartReader, ClientPayloadError, hdrs, web

from .. import disk, probe
from ..daemon import SERVICES
from ..intake import clean_name
from ..job import Job, Status
from .errors import ApiError, error_response
from .keys import CONFIG, COUNTERS, GUARD

log = logging.getLogger(__name__)

CHUNK = 1 << 20  # one thread hop per MiB: 256 KiB chunks made a 2 GiB upload 1.5x slower
DISK_CHECK_EVERY = 32 << 20  # bytes written between two looks at free space
MAX_PARTS = 8
MAX_FIELD_BYTES = 256  # the profile field
MAX_NAME_CHARS = 200
MULTIPART_SLACK = 64 * 1024  # boundaries and part headers around the file itself


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_post("/api/jobs", create_job, expect_handler=expect_upload)


async def expect_upload(request: web.Request) -> web.StreamResponse | None:
    """`Expect: 100-continue`: refuse an oversized upload before the client sends it.

    This runs before the middlewares, so it does their checks itself and renders its own
    error: a stranger must not be invited to send gigabytes only to be refused."""
    try:
        request.app[GUARD](request)
        _check_declared_size(request)
    except web.HTTPSeeOther:
        resp = error_response(401, "unauthorized", "a valid token is required")
        resp.force_close()
        return resp
    except ApiError as e:
        resp = error_response(e.status, e.code, e.message)
        resp.force_close()
        return resp
    if request.headers.get(hdrs.EXPECT, "").lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0
    return None


def _check_declared_size(request: web.Request) -> None:
    limit = request.app[CONFIG].web.max_upload_bytes
    if request.content_length is not None and request.content_length > limit + MULTIPART_SLACK:
        raise _too_large(limit)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "too_large", f"the upload is over the limit of {limit} bytes")


def display_name(raw: str | None) -> str:
    """The browser's file name without any folder part (some send one), cleaned and
    capped for display by the intake's own rules."""
    return clean_name((raw or "").replace("\\", "/").rsplit("/", 1)[-1], MAX_NAME_CHARS)


async def create_job(request: web.Request) -> web.Response:
    cfg = request.app[CONFIG]
    _check_declared_size(request)
    _check_disk(cfg.storage.tmp_dir, cfg.storage.min_free_bytes, request.content_length or 0)
    if not request.content_type.startswith("multipart/"):
        raise ApiError(400, "bad_request", "send the file as multipart/form-data, field 'file'")

    reader = await request.multipart()
    profile: str | None = None
    upload: Path | None = None
    name = ""
    try:
        for _ in range(MAX_PARTS):
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                raise ApiError(400, "bad_request", "nested multipart is not accepted")
            if part.name == "profile":
                profile = (await _read_field(part)).strip() or None
                _check_profile(request, profile)
            elif part.name == "file" and upload is None:
                name = display_name(part.filename)
                upload = cfg.storage.tmp_dir / f"upload-{secrets.token_hex(12)}"
                await _stream_to(request, part, upload)
            else:
                await _read_field(part)  # an unknown small field: skip it
        else:
            raise ApiError(400, "bad_request", f"at most {MAX_PARTS} form fields")
        if upload is None:
            raise ApiError(400, "bad_request", "no file: send it in the multipart field 'file'")
        _check_profile(request, profile)
        job = await _admit(request, upload, name, profile)
        upload = None  # the intake owns the file now (moved or deleted)
    except (ConnectionError, ClientPayloadError) as e:
        # The client went away mid-upload: nobody will read an answer.
        log.info("upload of %r aborted by the client: %s", name, e)
        raise ApiError(400, "aborted", "the upload did not complete") from None
    finally:
        if upload is not None:
            await _discard(upload)

    if job.status is Status.REJECTED:
        reason = job.error.message if job.error else "HandBrake can't read this file"
        raise ApiError(422, job.error.code if job.error else "not_video", reason)
    return web.json_response(job.to_json(), status=201)


def _check_profile(request: web.Request, profile: str | None) -> None:
    profiles = request.app[CONFIG].encode.profiles
    if profile is not None and profile not in profiles:
        choices = ", ".join(sorted(profiles))
        raise ApiError(400, "unknown_profile", f"unknown profile; choose one of {choices}")


def _check_disk(path: Path, min_free: int, incoming: int) -> None:
    try:
        disk.check(path, min_free, incoming)
    except disk.DiskFull as e:
        raise ApiError(507, "disk_full", str(e)) from None


async def _read_field(part: BodyPartReader) -> str:
    data = bytearray()
    while chunk := await part.read_chunk(MAX_FIELD_BYTES + 1):
        data += chunk
        if len(data) > MAX_FIELD_BYTES:
            raise ApiError(400, "bad_request", f"form field {part.name!r} is too long")
    return data.decode("utf-8", errors="replace")


async def _stream_to(request: web.Request, part: BodyPartReader, path: Path) -> None:
    """Write the part to `path` chunk by chunk, enforcing the size limit and the disk guard."""
    cfg = request.app[CONFIG]
    counters = request.app[COUNTERS]
    limit = cfg.web.max_upload_bytes
    written = 0
    next_check = DISK_CHECK_EVERY
    counters.uploads_active += 1
    # One write in flight while the next chunk is read and parsed: the disk and the
    # network overlap, and at most two chunks are ever held in memory.
    writing: asyncio.Future[int] | None = None
    try:
        async with aiofiles.open(path, "xb") as f:
            try:
                while chunk := await part.read_chunk(CHUNK):
                    written += len(chunk)
                    if written > limit:
                        raise _too_large(limit)
                    if writing is not None:
                        await writing
                    writing = asyncio.ensure_future(f.write(chunk))
                    counters.bytes_uploaded += len(chunk)
                    if written >= next_check:
                        next_check += DISK_CHECK_EVERY
                        _check_disk(path.parent, cfg.storage.min_free_bytes, 0)
                if writing is not None:
                    await writing
            finally:
                if writing is not None and not writing.done():
                    # The file closes only after its last write has finished.
                    await asyncio.wait([writing])
    finally:
        counters.uploads_active -= 1


async def _admit(request: web.Request, upload: Path, name: str, profile: str | None) -> Job:
    svc = request.app[SERVICES]
    try:
        return await svc.intake.admit(upload, "upload", name=name, profile=profile)
    except ValueError as e:
        raise ApiError(400, "bad_request", str(e)) from None
    except disk.DiskFull as e:
        raise ApiError(507, "disk_full", str(e)) from None
    except probe.HandBrakeMissing as e:
        # vidd's fault, not the file's: the upload is dropped (the client still has it).
        log.error("upload of %r refused: %s", name, e)
        raise ApiError(
            503, "handbrake_missing", f"{e}, so vidd can't take videos until it is back"
        ) from None


async def _discard(path: Path) -> None:
    try:
        await aiofiles.os.remove(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        log.warning("could not remove the partial upload %s: %s", path, e)
