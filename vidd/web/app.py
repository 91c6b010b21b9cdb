"""The application factory: state under typed keys, resources started and stopped in
dependency order by cleanup_ctx (services, then the hub that listens to their store)."""

from __future__ import annotations

import asyncio
import sys
import weakref
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import WSCloseCode, web

from ..config import Config
from ..daemon import SERVICES, services
from ..hub import Hub
from ..notify import Notifier
from . import api, media, pages, status, upload, ws
from .errors import errors
from .keys import CONFIG, COUNTERS, GUARD, HUB, PAGES, STATIC_DIR, WEBSOCKETS, Counters
from .page_cache import PageCache
from .security import add_security_headers, checker, guard


def _static_dir() -> Path:
    """The page's files: static/ beside the package in a checkout, or where pip put them."""
    checkout = Path(__file__).resolve().parent.parent.parent / "static"
    if (checkout / "index.html").exists():
        return checkout
    return Path(sys.prefix) / "share" / "vidd" / "static"


STATIC = _static_dir()
MAX_FORM_BYTES = 64 * 1024  # the login form; uploads stream and have their own limit


def create_app(
    config: Config, *, notifier: Notifier | None = None, static_dir: Path = STATIC
) -> web.Application:
    check = checker(config.web)
    app = web.Application(
        middlewares=[errors, guard(check)],
        client_max_size=MAX_FORM_BYTES,
    )
    app[CONFIG] = config
    app[GUARD] = check
    app[PAGES] = PageCache()
    app[COUNTERS] = Counters()
    app[STATIC_DIR] = static_dir
    app[WEBSOCKETS] = weakref.WeakSet()
    app.cleanup_ctx.append(_services_ctx(config, notifier))
    app.cleanup_ctx.append(_hub_ctx)
    app.on_shutdown.append(_close_websockets)
    app.on_response_prepare.append(add_security_headers)

    r = app.router
    pages.add_routes(r, static_dir)
    api.add_routes(r)
    upload.add_routes(r)
    media.add_routes(r)
    status.add_routes(r)
    r.add_get("/ws", ws.websocket)
    return app


def _services_ctx(
    config: Config, notifier: Notifier | None
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        async with services(config, notifier) as svc:
            app[SERVICES] = svc
            yield

    return ctx


async def _hub_ctx(app: web.Application) -> AsyncIterator[None]:
    hub = Hub(app[CONFIG].web.max_ws_clients)
    store = app[SERVICES].store
    store.listeners += [hub, app[PAGES]]
    app[HUB] = hub
    yield
    store.listeners.remove(hub)
    store.listeners.remove(app[PAGES])
    await hub.close()


async def _close_websockets(app: web.Application) -> None:
    """Shutdown: every socket closes with 1001 (going away) before the services stop."""
    # Concurrently and bounded: a client that doesn't read must not stall the shutdown.
    sockets: weakref.WeakSet[web.WebSocketResponse] = app[WEBSOCKETS]
    closes = [
        asyncio.wait_for(
            sock.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down"), 3.0
        )
        for sock in list(sockets)
    ]
    await asyncio.gather(*closes, return_exceptions=True)
