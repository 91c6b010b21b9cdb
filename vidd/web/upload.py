"""POST /api/jobs: a multipart upload streamed into tmp/ in chunks, then handed to the
same `Intake.admit` as the inbox. Limits are enforced while reading, and a partial file
never outlives the request that wrote it."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
import warnings
from collections.abc import Awaitable, Iterator
from pathlib import Path

import aiofiles
import aiofiles.os
from aiohttp import (
    BadContentDispositionHeader,
    BadContentDispositionParam,
    BodyPartReader,
    ClientPayloadError,
    MultipartReader,
    hdrs,
    web,
)
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError

from .. import disk, probe, timeouts
from ..intake import QueueFull, clean_name
from ..job import Job, Status
from ..words import plain
from .errors import ApiError, error_response
from .keys import CONFIG, COUNTERS, GUARD, SERVICES

log = logging.getLogger(__name__)

CHUNK = 1 << 20  # one thread hop per MiB: 256 KiB chunks made a 2 GiB upload 1.5x slower
DISK_CHECK_EVERY = 32 << 20  # bytes written between two looks at free space
MAX_PARTS = 8
MAX_FIELD_BYTES = 256  # the profile field
MAX_NAME_CHARS = 200
MULTIPART_SLACK = 64 * 1024  # boundaries and part headers around the file itself
RETRY_S = 30  # Retry-After for a busy or full answer
JOB_ID_HEADER = "Vidd-Job-Id"  # on every answer that created a job (201, 422)


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_post("/api/jobs", create_job, expect_handler=expect_upload)


async def expect_upload(request: web.Request) -> web.StreamResponse | None:
    """`Expect: 100-continue`: refuse an oversized upload before the client sends it.

    This runs before the middlewares, so it does their checks itself and renders its own
    error: a stranger must not be invited to send gigabytes only to be refused."""
    try:
        await request.app[GUARD].check(request)
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
        raise too_large(limit)


def too_large(limit: int) -> ApiError:
    return ApiError(413, "too_large", f"the upload is over the limit of {limit} bytes")


def display_name(raw: str | None) -> str:
    """The browser's file name without any folder part (some send one), cleaned and
    capped for display by the intake's own rules."""
    return clean_name((raw or "").replace("\\", "/").rsplit("/", 1)[-1], MAX_NAME_CHARS)


async def create_job(request: web.Request) -> web.Response:
    cfg = request.app[CONFIG]
    counters = request.app[COUNTERS]
    _check_declared_size(request)
    if counters.uploads_active >= cfg.web.max_uploads:
        raise ApiError(
            429, "busy", "too many uploads at once; try again shortly", retry_after=RETRY_S
        )
    await check_room(request)
    if not request.content_type.startswith("multipart/"):
        raise ApiError(400, "bad_request", "send the file as multipart/form-data, field 'file'")
    counters.uploads_active += 1
    try:
        # The declared length is promised up front: parallel uploads can't each count
        # the same free space.
        with (
            disk_full_answers(),
            request.app[SERVICES].disk.reserve(request.content_length or 0) as reservation,
        ):
            upload, name, profile = await _receive(request, reservation)
            try:
                job = await admit(request, upload, name, profile)
            except BaseException:
                # The intake put the file back where it was; the client still has it.
                await _discard(upload)
                raise
    finally:
        counters.uploads_active -= 1
    created = {JOB_ID_HEADER: job.id}  # the job exists either way; a CLI prints its id
    if job.status is Status.REJECTED:
        reason = (
            plain(job.error.code, job.error.message)
            if job.error
            else "This isn't a video vidd can read."
        )
        raise ApiError(422, job.error.code if job.error else "not_video", reason, created)
    return web.json_response(job.to_json(), status=201, headers=created)


async def _receive(
    request: web.Request, reservation: disk.Reservation
) -> tuple[Path, str, str | None]:
    """Read the form: the file streamed into tmp/, its display name, the profile.

    A form vidd can't take is an ApiError and one log line; on every way out but
    success, nothing is left in tmp/."""
    profile: str | None = None
    upload: Path | None = None
    name = ""
    received = False
    try:
        reader = await _multipart(request)
        for _ in range(MAX_PARTS):
            part = await _next_part(request, reader)
            if part is None:
                break
            field, filename = _disposition(request, part)
            if field == "profile":
                profile = (await _read_field(request, part)).strip() or None
                check_profile(request, profile)
            elif field == "file":
                if upload is not None:
                    raise ApiError(400, "bad_request", "send one file per upload, not several")
                name = display_name(filename)
                upload = request.app[SERVICES].layout.new_upload()
                await _stream_to(request, part, upload, reservation)
            else:
                await _read_field(request, part)  # an unknown small field: skip it
        else:
            raise ApiError(400, "bad_request", f"at most {MAX_PARTS} form fields")
        if upload is None:
            raise ApiError(400, "bad_request", "no file: send it in the multipart field 'file'")
        check_profile(request, profile)
        received = True
        return upload, name, profile
    except ApiError as e:
        (log.warning if e.status >= 500 else log.info)(
            "upload of %r refused (%d %s): %s", name, e.status, e.code, e.message
        )
        raise
    except (ConnectionError, ClientPayloadError, web.RequestPayloadError) as e:
        # The client went away mid-upload, or broke the framing of the body.
        log.info("upload of %r aborted: %s", name, _first_line(e))
        raise ApiError(400, "aborted", "the upload did not complete") from None
    except (ValueError, HttpProcessingError) as e:
        # aiohttp's multipart reader: no boundary, a wrong one, a part cut short.
        raise ApiError(400, "bad_request", f"the form is malformed: {e}") from None
    finally:
        if upload is not None and not received:
            await _discard(upload)


async def _multipart(request: web.Request) -> MultipartReader:
    try:
        return await request.multipart()
    except ValueError as e:  # no boundary, or a bad one
        raise _malformed(request, e) from None


async def _next_part(request: web.Request, reader: MultipartReader) -> BodyPartReader | None:
    try:
        part = await reader.next()
    except (BadContentDispositionHeader, BadContentDispositionParam):
        # aiohttp warns while it looks for a `_charset_` part; where warnings are
        # errors (the tests), the warning is raised here.
        raise _bad_disposition(request) from None
    except (ValueError, RuntimeError, BadHttpMessage) as e:
        raise _malformed(request, e) from None
    if part is not None and not isinstance(part, BodyPartReader):
        raise ApiError(400, "bad_request", "nested multipart is not accepted")
    return part


async def _read_chunk(request: web.Request, part: BodyPartReader, size: int) -> bytes:
    try:
        return await part.read_chunk(size)
    except (ValueError, BadHttpMessage) as e:
        raise _malformed(request, e) from None


def _disposition(request: web.Request, part: BodyPartReader) -> tuple[str | None, str | None]:
    """The part's field name and file name. aiohttp only warns about a malformed
    Content-Disposition (and then has neither): here it is the client's error."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        field, filename = part.name, part.filename
    if caught:
        raise _bad_disposition(request)
    return field, filename


def _bad_disposition(request: web.Request) -> ApiError:
    if request.content.at_eof():  # the body was cut in the middle of the part's headers
        return _ended_early()
    return ApiError(400, "bad_request", "a form part has a malformed Content-Disposition")


def _malformed(request: web.Request, e: Exception) -> ApiError:
    if request.content.at_eof() and "EOF" in str(e):
        return _ended_early()
    return ApiError(400, "bad_request", f"not a valid multipart form: {_first_line(e)}")


def _ended_early() -> ApiError:
    return ApiError(
        400,
        "bad_request",
        "the body ended before the multipart form did (a Content-Length that is too short?)",
    )


def _first_line(e: Exception) -> str:
    text = e.message if isinstance(e, HttpProcessingError) else str(e)
    lines = str(text).strip().splitlines()
    return lines[0][:200] if lines else type(e).__name__


def check_profile(request: web.Request, profile: str | None) -> None:
    profiles = request.app[SERVICES].config.encode.profiles  # live: a reload may add one
    if profile is not None and profile not in profiles:
        choices = ", ".join(sorted(profiles))
        raise ApiError(400, "unknown_profile", f"unknown profile; choose one of {choices}")


@contextlib.contextmanager
def disk_full_answers() -> Iterator[None]:
    try:
        yield
    except disk.DiskFull as e:
        raise ApiError(507, "disk_full", str(e)) from None


async def _read_field(request: web.Request, part: BodyPartReader) -> str:
    data = bytearray()
    while chunk := await _read_chunk(request, part, MAX_FIELD_BYTES + 1):
        data += chunk
        if len(data) > MAX_FIELD_BYTES:
            raise ApiError(400, "bad_request", f"form field {part.name!r} is too long")
    return data.decode("utf-8", errors="replace")


async def _stream_to(
    request: web.Request, part: BodyPartReader, path: Path, reservation: disk.Reservation
) -> None:
    """Write the part to `path` chunk by chunk, enforcing the size limit and the disk guard."""
    cfg = request.app[CONFIG]
    counters = request.app[COUNTERS]
    guard = request.app[SERVICES].disk
    limit = cfg.web.max_upload_bytes
    written = 0
    next_check = DISK_CHECK_EVERY
    # One write in flight while the next chunk is read and parsed: the disk and the
    # network overlap, and at most two chunks are ever held in memory.
    writing: asyncio.Future[int] | None = None
    pace = Pace(cfg.web.body_timeout_s, cfg.web.min_body_rate)
    try:
        async with aiofiles.open(path, "xb") as f:
            try:
                while chunk := await pace.next(_read_chunk(request, part, CHUNK)):
                    written += len(chunk)
                    if written > limit:
                        raise too_large(limit)
                    if writing is not None:
                        await writing
                    reservation.wrote(len(chunk))  # past a declared length: checked
                    writing = asyncio.ensure_future(f.write(chunk))
                    counters.bytes_uploaded += len(chunk)
                    if written >= next_check:  # others write too (encodes, the inbox)
                        next_check += DISK_CHECK_EVERY
                        guard.check()
                if writing is not None:
                    await writing
            finally:
                if writing is not None and not writing.done():
                    # The file closes only after its last write has finished.
                    await asyncio.wait([writing])
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise ApiError(
            507, "disk_full", "the disk filled up while the upload was being written"
        ) from None


class Pace:
    """A body must keep coming: no pause longer than `timeout_s`, and after its first
    minute at least `min_rate` bytes a second on average (else 408, and closed)."""

    GRACE_S = 60.0

    def __init__(self, timeout_s: float, min_rate: int) -> None:
        self.timeout_s = timeout_s
        self.min_rate = min_rate
        self.started = time.monotonic()
        self.received = 0

    async def next(self, read: Awaitable[bytes]) -> bytes:
        try:
            chunk = await timeouts.wait_for(read, self.timeout_s)
        except TimeoutError:
            raise ApiError(
                408, "too_slow", f"the upload stopped for {self.timeout_s:g} s"
            ) from None
        self.received += len(chunk)
        elapsed = time.monotonic() - self.started
        if elapsed > self.GRACE_S and self.received / elapsed < self.min_rate:
            raise ApiError(
                408,
                "too_slow",
                f"the upload is too slow ({self.received / elapsed:.0f} bytes/s; "
                f"at least {self.min_rate} are needed)",
            )
        return chunk


async def check_room(request: web.Request) -> None:
    try:
        await request.app[SERVICES].intake.check_room()
    except QueueFull as e:
        raise ApiError(429, "queue_full", str(e), retry_after=RETRY_S) from None


async def admit(request: web.Request, upload: Path, name: str, profile: str | None) -> Job:
    svc = request.app[SERVICES]
    try:
        return await svc.intake.admit(upload, "upload", name=name, profile=profile)
    except QueueFull as e:
        raise ApiError(429, "queue_full", str(e), retry_after=RETRY_S) from None
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
