"""vidd's web face: the aiohttp application (API, WebSocket, media, pages)."""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
