"""The typed keys under which the web app keeps its state. This module imports nothing
from the app's handlers, so every handler can import it."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from ..config import Config
from ..hub import Hub
from ..services import Services
from .page_cache import PageCache
from .security import Guard


@dataclass
class Counters:
    """Web-side counters for /metrics."""

    bytes_uploaded: int = 0
    uploads_active: int = 0


CONFIG: web.AppKey[Config] = web.AppKey("config", Config)
SERVICES: web.AppKey[Services] = web.AppKey("services", Services)
HUB: web.AppKey[Hub] = web.AppKey("hub", Hub)
COUNTERS: web.AppKey[Counters] = web.AppKey("counters", Counters)
STATIC_DIR: web.AppKey[Path] = web.AppKey("static_dir", Path)
WEBSOCKETS: web.AppKey[weakref.WeakSet[web.WebSocketResponse]] = web.AppKey("websockets")

# The request checks: for the middleware, and for handlers that run before middlewares.
GUARD: web.AppKey[Guard] = web.AppKey("guard", Guard)
PAGES: web.AppKey[PageCache] = web.AppKey("pages", PageCache)
