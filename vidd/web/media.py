"""GET /videos/<id>.mp4 and /videos/<id>.jpg: finished files, found by job id only.

aiohttp's FileResponse does Range (206, suffix ranges), If-None-Match,
If-Modified-Since and If-Range, and streams with sendfile; this module decides which
file an id may name, and which Range it gets to see: a multi-range request (or one in a
unit other than bytes) is answered with the whole file (200), as servers that don't send
multipart/byteranges do, and an unsatisfiable or malformed range is a 416 in the usual
error shape.
"""

from __future__ import annotations

import os
import re
import stat
from urllib.parse import quote

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter

from ..job import Status
from .api import find_job
from .errors import ApiError
from .files import FileAnswer
from .keys import SERVICES

CONTENT_TYPES = {"mp4": "video/mp4", "jpg": "image/jpeg"}
# The one form aiohttp's FileResponse parses; anything else reaches it only as nothing.
SINGLE_RANGE = re.compile(r"bytes=(\d*)-(\d*)", re.ASCII | re.IGNORECASE)


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_get(r"/videos/{id:[A-Za-z0-9_-]{1,32}}.{ext:mp4|jpg}", video_file)


class _WholeFile(FileAnswer):
    """A FileResponse that ignores the request's Range header: the whole file, 200."""

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        headers = request.headers.copy()
        del headers[hdrs.RANGE]
        return await super().prepare(request.clone(headers=headers))


async def video_file(request: web.Request) -> web.StreamResponse:
    svc = request.app[SERVICES]
    ext = request.match_info["ext"]
    job = await find_job(svc, request.match_info["id"])
    if job.status is not Status.DONE or (ext == "jpg" and not job.poster):
        raise ApiError(404, "not_found", f"job {job.id} has no {ext} file")
    path = svc.layout.video(job.id) if ext == "mp4" else svc.layout.poster(job.id)
    try:
        st = path.stat()
    except FileNotFoundError:
        st = None
    if st is None or not stat.S_ISREG(st.st_mode):
        raise ApiError(404, "not_found", f"the {ext} file of job {job.id} is missing")
    headers = {
        "Content-Type": CONTENT_TYPES[ext],
        # Private: with a token, a shared cache must not keep it.
        "Cache-Control": "private, max-age=3600",
    }
    if "download" in request.query:
        stem = job.name.rsplit(".", 1)[0] or job.id
        filename = f"{stem}.{ext}"
        headers["Content-Disposition"] = (
            f"attachment; filename=\"{job.id}.{ext}\"; filename*=UTF-8''{quote(filename)}"
        )
    if _whole_file_despite_range(request, st):
        return _WholeFile(path, headers=headers)
    return FileAnswer(path, headers=headers)


def _whole_file_despite_range(request: web.Request, st: os.stat_result) -> bool:
    """Check the Range header the way FileResponse will use it. True for a multi-range
    request; raises a 416 ApiError for a range no byte of the file satisfies."""
    rng = request.headers.get(hdrs.RANGE)
    if rng is None:
        return False
    if (if_range := request.if_range) is not None and st.st_mtime > if_range.timestamp():
        return False  # the file changed since: FileResponse ignores the Range
    unit, _, _ = rng.partition("=")
    if unit.strip().lower() != "bytes":
        return True  # a unit it does not know: a server must ignore the Range (RFC 9110)
    if "," in rng:
        return True  # several ranges: the whole file, never a multipart answer
    size = st.st_size
    unsatisfiable = {"Content-Range": f"bytes */{size}"}
    m = SINGLE_RANGE.fullmatch(rng)
    if m is None or m.group(1) == m.group(2) == "":
        raise ApiError(
            416, "range_not_satisfiable", "Range must be bytes=first-last", unsatisfiable
        )
    first, last = m.group(1), m.group(2)
    if not first and int(last) == 0:
        raise ApiError(
            416, "range_not_satisfiable", "the range bytes=-0 asks for no bytes", unsatisfiable
        )
    if first and (int(first) >= size or (last and int(last) < int(first))):
        raise ApiError(
            416,
            "range_not_satisfiable",
            f"the range {rng} is outside the file, which is {size} bytes long",
            unsatisfiable,
        )
    return False
