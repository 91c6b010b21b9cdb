"""The web layer's guards: the Host check (against DNS rebinding), the optional token
(Bearer header or session cookie), the Origin check for anything that changes state or
opens a WebSocket, and the security headers every response carries."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
from collections.abc import Callable

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware
from yarl import URL

from ..config import Web
from .errors import ApiError, Handler

COOKIE = "vidd_session"
CSP = (
    "default-src 'self'; img-src 'self' data:; media-src 'self'; connect-src 'self'; "
    "style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Reachable without the token: the login form, the page's own assets, the health check.
PUBLIC_PREFIXES = ("/login", "/logout", "/static/", "/healthz")
PAGE_PATHS = ("/", "/watch/")


def session_value(token: str) -> str:
    """What the cookie holds: derived from the token, so the token itself never sits in it."""
    return hmac.new(token.encode(), b"vidd-session-v1", hashlib.sha256).hexdigest()


def is_authenticated(request: web.Request, token: str) -> bool:
    if not token:
        return True
    auth = request.headers.get(hdrs.AUTHORIZATION, "")
    scheme, _, given = auth.partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
        return True
    cookie = request.cookies.get(COOKIE, "")
    return hmac.compare_digest(cookie.encode(), session_value(token).encode())


def origin_allowed(request: web.Request, allowed: tuple[str, ...]) -> bool:
    """No Origin (a CLI, curl) passes; a browser's Origin must match Host or the allow list."""
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None:
        return True
    origin = origin.strip().rstrip("/")
    if origin in allowed:
        return True
    try:
        url = URL(origin)
    except ValueError:
        return False
    if url.scheme not in ("http", "https") or not url.host or url.path not in ("", "/"):
        return False
    host = f"[{url.host}]" if ":" in url.host else url.host
    candidates = {f"{host}:{url.port}".lower()}
    if url.is_default_port():
        candidates.add(host.lower())
    return request.host.lower() in candidates


def host_allowed(request: web.Request, names: frozenset[str]) -> bool:
    """Whether the Host header names this server. A DNS-rebinding page reaches vidd under
    the attacker's domain name, so only IP literals and the configured names pass."""
    host = (request.host or "").lower()
    name = host[1 : host.index("]")] if host.startswith("[") and "]" in host else host
    name = name.rsplit(":", 1)[0] if not host.startswith("[") else name
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return name in names


def allowed_host_names(
    bind_host: str, hosts: tuple[str, ...], origins: tuple[str, ...]
) -> frozenset[str]:
    names = {"localhost", bind_host.lower(), *(h.lower() for h in hosts)}
    for origin in origins:
        with contextlib.suppress(ValueError):
            if (host := URL(origin).host) is not None:
                names.add(host.lower())
    return frozenset(names)


def check_request(
    request: web.Request, token: str, origins: tuple[str, ...], names: frozenset[str]
) -> None:
    """Host first, then Origin (a cross-site request learns nothing), then the token.
    Raises ApiError, or a redirect to the login form for a page."""
    if not host_allowed(request, names):
        raise ApiError(
            403, "unknown_host", "this server does not answer to that host name (web.allowed_hosts)"
        )
    if (request.method not in SAFE_METHODS or _is_websocket(request)) and not origin_allowed(
        request, origins
    ):
        raise ApiError(403, "foreign_origin", "requests from another site are refused")
    if token and _needs_token(request.path) and not is_authenticated(request, token):
        if _is_page(request.path) and request.method in SAFE_METHODS:
            raise web.HTTPSeeOther("/login")
        raise ApiError(401, "unauthorized", "a valid token is required")


def _is_websocket(request: web.Request) -> bool:
    return request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"


def _needs_token(path: str) -> bool:
    return not path.startswith(PUBLIC_PREFIXES)


def _is_page(path: str) -> bool:
    return path == "/" or path.startswith("/watch/")


def checker(web_config: Web) -> Callable[[web.Request], None]:
    """check_request with the settings bound."""
    names = allowed_host_names(
        web_config.host, web_config.allowed_hosts, web_config.allowed_origins
    )
    token, origins = web_config.token, web_config.allowed_origins
    return lambda request: check_request(request, token, origins, names)


def guard(check: Callable[[web.Request], None]) -> Middleware:
    """The middleware running the checks before every handler."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        check(request)
        return await handler(request)

    return middleware


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every answer, files and errors included, carries the headers."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
