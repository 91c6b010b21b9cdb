"""The HTML pages (/ and /watch/<id>), the login form and the static assets.

Pages are static files: they carry no user data. Their scripts fetch JSON and render
names with textContent, so nothing a user named ever becomes markup.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from aiohttp import web

from .api import find_job
from .errors import ApiError, Handler
from .files import FileAnswer
from .keys import GUARD, SERVICES
from .security import is_https, session_cookie
from .sessions import COOKIE, MAX_AGE_S, SECURE_COOKIE

log = logging.getLogger(__name__)

PAGE_HEADERS = {"Cache-Control": "no-cache"}
ASSET_TYPES = {
    ".html": "text/html",
    ".css": "text/css",
    ".js": "text/javascript",
    ".svg": "image/svg+xml",
}


def add_routes(r: web.UrlDispatcher, static_dir: Path) -> None:
    r.add_get("/", _page(static_dir / "index.html"))
    r.add_get("/watch/{id}", _watch(static_dir / "watch.html"))
    r.add_get("/login", _page(static_dir / "login.html"))
    r.add_post("/login", login)
    r.add_post("/logout", logout)
    # The page's assets: a flat folder, so a name without a slash or a leading dot can
    # only name a file in it.
    r.add_get("/static/{filename:[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}}", _asset(static_dir))


def _page(path: Path) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return FileAnswer(path, headers=PAGE_HEADERS)

    return handler


def _asset(folder: Path) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        path = folder / request.match_info["filename"]
        # Named here rather than guessed from the system's mime.types, which differ.
        kind = ASSET_TYPES.get(path.suffix, "application/octet-stream")
        return FileAnswer(path, headers={"Content-Type": kind})

    return handler


def _watch(path: Path) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        await find_job(request.app[SERVICES], request.match_info["id"])  # 404 for a bad id
        return FileAnswer(path, headers=PAGE_HEADERS)

    return handler


async def login(request: web.Request) -> web.StreamResponse:
    """The form's POST: a session for the right token; back to the form, saying why,
    for a wrong one. Wrong tries back off per client address."""
    guard = request.app[GUARD]
    if not guard.token or guard.sessions is None:
        raise web.HTTPSeeOther("/")
    address = guard.address(request)
    if (wait := guard.backoff.wait_s(address)) > 0:
        raise web.HTTPSeeOther(f"/login?wait={math.ceil(wait)}")
    try:
        form = await request.post()
    except ValueError as e:  # a multipart type without a usable boundary
        raise ApiError(400, "bad_request", f"the login form can't be read: {e}") from None
    given = form.get("token", "")
    if not isinstance(given, str) or not guard.token_matches(given.strip()):
        guard.count_failure(request, "a failed login")
        raise web.HTTPSeeOther("/login?failed=1")
    guard.backoff.succeeded(address)
    session = await guard.sessions.open(address)
    log.info("login from %s", address)
    secure = is_https(request, guard.trust_proxy)
    resp = web.HTTPSeeOther("/")
    resp.set_cookie(
        SECURE_COOKIE if secure else COOKIE,
        session,
        max_age=MAX_AGE_S,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=secure,
    )
    raise resp


async def logout(request: web.Request) -> web.StreamResponse:
    guard = request.app[GUARD]
    if guard.sessions is not None:
        await guard.sessions.close(session_cookie(request))
    resp = web.HTTPSeeOther("/login")
    resp.del_cookie(COOKIE, path="/")
    resp.del_cookie(SECURE_COOKIE, path="/", secure=True)
    raise resp
