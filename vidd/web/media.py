"""GET /videos/<id>.mp4 and /videos/<id>.jpg: finished files, found by job id only.

aiohttp's FileResponse does Range (206, suffix ranges, 416), If-None-Match,
If-Modified-Since and If-Range, and streams with sendfile; this module decides which
file an id may name.
"""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web

from ..job import Status
from .api import find_job
from .errors import ApiError
from .files import FileAnswer
from .keys import SERVICES

CONTENT_TYPES = {"mp4": "video/mp4", "jpg": "image/jpeg"}


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_get(r"/videos/{id:[A-Za-z0-9_-]{1,32}}.{ext:mp4|jpg}", video_file)


async def video_file(request: web.Request) -> web.StreamResponse:
    svc = request.app[SERVICES]
    ext = request.match_info["ext"]
    job = await find_job(svc, request.match_info["id"])
    if job.status is not Status.DONE or (ext == "jpg" and not job.poster):
        raise ApiError(404, "not_found", f"job {job.id} has no {ext} file")
    path = svc.layout.video(job.id) if ext == "mp4" else svc.layout.poster(job.id)
    if not path.is_file():
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
    return FileAnswer(path, headers=headers)
