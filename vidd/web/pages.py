"""The HTML pages (/ and /watch/<id>), the login form and the static assets.

Pages are static files: they carry no user data. Their scripts fetch JSON and render
names with textContent, so nothing a user named ever becomes markup.
"""

from __future__ import annotations

import hmac
from pathlib import Path

from aiohttp import web

from .api import find_job
from .errors import Handler
from .keys import CONFIG, SERVICES
from .security import COOKIE, session_value

PAGE_HEADERS = {"Cache-Control": "no-cache"}
SESSION_MAX_AGE = 30 * 24 * 3600


def add_routes(r: web.UrlDispatcher, static_dir: Path) -> None:
    r.add_get("/", _page(static_dir / "index.html"))
    r.add_get("/watch/{id}", _watch(static_dir / "watch.html"))
    r.add_get("/login", _page(static_dir / "login.html"))
    r.add_post("/login", login)
    r.add_post("/logout", logout)
    r.add_static("/static/", static_dir, append_version=False)


def _page(path: Path) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(path, headers=PAGE_HEADERS)

    return handler


def _watch(path: Path) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        await find_job(request.app[SERVICES], request.match_info["id"])  # 404 for a bad id
        return web.FileResponse(path, headers=PAGE_HEADERS)

    return handler


async def login(request: web.Request) -> web.StreamResponse:
    token = request.app[CONFIG].web.token
    form = await request.post()
    given = form.get("token", "")
    if not token:
        raise web.HTTPSeeOther("/")
    if not isinstance(given, str) or not hmac.compare_digest(given.encode(), token.encode()):
        raise web.HTTPSeeOther("/login?failed=1")
    resp = web.HTTPSeeOther("/")
    resp.set_cookie(
        COOKIE,
        session_value(token),
        max_age=SESSION_MAX_AGE,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )
    raise resp


async def logout(request: web.Request) -> web.StreamResponse:
    resp = web.HTTPSeeOther("/login")
    resp.del_cookie(COOKIE, path="/")
    raise resp
