"""The application factory: state under typed keys, the routes, and one cleanup_ctx that
opens the services with the web's own store listeners (the hub, the page cache)."""

from __future__ import annotations

import asyncio
import logging
import sys
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import WSCloseCode, web

from .. import timeouts
from ..config import Config
from ..dispatch import Dispatcher
from ..hub import Hub
from ..notify import Notifier
from ..services import open_services
from ..shutdown import WEBSOCKETS_S
from . import api, media, openapi, pages, profiles, status, tus, upload, workers, ws
from .error_page import error_pages
from .errors import errors
from .keys import (
    CONFIG,
    COUNTERS,
    GUARD,
    HUB,
    PAGES,
    SERVICES,
    STATIC_DIR,
    WEBSOCKETS,
    Counters,
)
from .page_cache import PageCache
from .security import Guard, add_security_headers, guard_middleware
from .sessions import Sessions

log = logging.getLogger(__name__)


def _static_dir() -> Path:
    """The page's files: static/ beside the package in a checkout, or where pip put them."""
    checkout = Path(__file__).resolve().parent.parent.parent / "static"
    if (checkout / "index.html").exists():
        return checkout
    return Path(sys.prefix) / "share" / "vidd" / "static"


STATIC = _static_dir()
MAX_FORM_BYTES = 64 * 1024  # the login form; uploads stream and have their own limit


def create_app(
    config: Config,
    *,
    notifier: Notifier | None = None,
    static_dir: Path = STATIC,
    websocket_close_s: float = WEBSOCKETS_S,
    dispatcher: Dispatcher | None = None,
) -> web.Application:
    guard = Guard(config.web)
    app = web.Application(
        middlewares=[error_pages, errors, guard_middleware(guard)],  # outermost first
        client_max_size=MAX_FORM_BYTES,
    )
    app[CONFIG] = config
    app[GUARD] = guard
    app[PAGES] = PageCache()
    app[HUB] = Hub(config.web.max_ws_clients, max_per_address=config.web.max_ws_per_client)
    app[COUNTERS] = Counters()
    app[STATIC_DIR] = static_dir
    app[WEBSOCKETS] = weakref.WeakSet()
    app.cleanup_ctx.append(_services_ctx(config, notifier, dispatcher))
    app.on_shutdown.append(_websocket_closer(websocket_close_s))
    app.on_response_prepare.append(add_security_headers)

    r = app.router
    pages.add_routes(r, static_dir)
    api.add_routes(r)
    upload.add_routes(r)
    tus.add_routes(r)
    media.add_routes(r)
    status.add_routes(r)
    profiles.add_routes(r)
    workers.add_routes(r)
    r.add_get("/ws", ws.websocket)
    r.add_get("/api/openapi.json", openapi.document)
    return app


def _services_ctx(
    config: Config, notifier: Notifier | None, dispatcher: Dispatcher | None = None
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        hub, pages = app[HUB], app[PAGES]
        async with open_services(
            config, notifier, listeners=(hub, pages), dispatcher=dispatcher
        ) as svc:
            app[SERVICES] = svc
            sessions = Sessions(svc.store, config.web.token)
            if ended := await sessions.forget_other_tokens():
                log.info("web: %d browser session(s) ended (expired, or the token changed)", ended)
            app[GUARD].sessions = sessions
            yield
            app[GUARD].sessions = None
        await hub.close()

    return ctx


def _websocket_closer(timeout_s: float) -> Callable[[web.Application], Awaitable[None]]:
    async def close_websockets(app: web.Application) -> None:
        """Shutdown: every socket closes with 1001 (going away) before the services stop.
        Concurrently and bounded: a client that doesn't read must not stall the stop."""
        sockets: weakref.WeakSet[web.WebSocketResponse] = app[WEBSOCKETS]
        closes = [
            timeouts.wait_for(
                sock.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down"),
                timeout_s,
            )
            for sock in list(sockets)
        ]
        await asyncio.gather(*closes, return_exceptions=True)

    return close_websockets
