"""The web layer's guards: the Host check (against DNS rebinding), the optional token
(Bearer header or session cookie), the Origin check for anything that changes state or
opens a WebSocket, and the security headers every response carries."""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import logging
import math

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware
from yarl import URL

from ..config import Web
from .backoff import Backoff
from .errors import ApiError, Handler
from .sessions import COOKIE, SECURE_COOKIE, Sessions

log = logging.getLogger(__name__)

CSP = (
    "default-src 'self'; img-src 'self' data:; media-src 'self'; connect-src 'self'; "
    "style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    # Not no-referrer: under it Chromium sends `Origin: null` with the login form's POST,
    # and a same-site request could not be told from a foreign one. same-origin still
    # tells other sites nothing.
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Reachable without the token: the login form, the page's own assets, the health check,
# and the remote workers' routes (their attempt's token is their credential).
PUBLIC_PREFIXES = ("/login", "/logout", "/static/", "/healthz", "/api/workers/attempts/")
PAGE_PATHS = ("/", "/watch/")


def client_address(request: web.Request, trust_proxy: bool) -> str:
    """Who is asking: the peer, or behind a trusted proxy the address it reports (the
    last hop it added: anything before it could be the client's own invention)."""
    if trust_proxy:
        forwarded = request.headers.get("X-Forwarded-For", "")
        if forwarded:
            return forwarded.rsplit(",", 1)[-1].strip()[:64] or "unknown"
        for item in reversed(request.forwarded):
            if for_ := item.get("for"):
                return for_.strip('"[]')[:64]
    return request.remote or "unknown"


def is_https(request: web.Request, trust_proxy: bool) -> bool:
    """Whether the browser's side of the connection is TLS."""
    if request.secure:
        return True
    if not trust_proxy:
        return False
    proto = request.headers.get("X-Forwarded-Proto", "").split(",", 1)[0].strip().lower()
    if proto:
        return proto == "https"
    return any(item.get("proto", "").lower() == "https" for item in request.forwarded[:1])


def session_cookie(request: web.Request) -> str:
    return request.cookies.get(SECURE_COOKIE) or request.cookies.get(COOKIE, "")


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


class Guard:
    """The checks every request passes before its handler: Host first, then Origin (a
    cross-site request learns nothing), then the token (Bearer header or session),
    with backoff for wrong tokens per client address."""

    def __init__(self, config: Web) -> None:
        self.token = config.token
        self.origins = config.allowed_origins
        self.trust_proxy = config.trust_proxy
        self.names = allowed_host_names(config.host, config.allowed_hosts, config.allowed_origins)
        self.backoff = Backoff()
        self.sessions: Sessions | None = None  # set once the store is open

    def __repr__(self) -> str:
        return f"<Guard token={'yes' if self.token else 'no'} {self.backoff!r}>"

    def address(self, request: web.Request) -> str:
        return client_address(request, self.trust_proxy)

    async def check(self, request: web.Request) -> None:
        """Raises ApiError, or a redirect to the login form for a page."""
        if not host_allowed(request, self.names):
            raise ApiError(
                403,
                "unknown_host",
                "this server does not answer to that host name (web.allowed_hosts)",
            )
        unsafe = request.method not in SAFE_METHODS or _is_websocket(request)
        if unsafe and not origin_allowed(request, self.origins):
            raise ApiError(403, "foreign_origin", "requests from another site are refused")
        if not self.token or not _needs_token(request.path):
            return
        auth = request.headers.get(hdrs.AUTHORIZATION, "")
        scheme, _, given = auth.partition(" ")
        if scheme.lower() == "bearer":
            self.refuse_while_backing_off(request)
            if self.token_matches(given.strip()):
                self.backoff.succeeded(self.address(request))
                return
            self.count_failure(request, "a wrong bearer token")
        elif self.sessions is not None and await self.sessions.valid(session_cookie(request)):
            return
        if _is_page(request.path) and request.method in SAFE_METHODS:
            raise web.HTTPSeeOther("/login")
        raise ApiError(401, "unauthorized", "a valid token is required")

    def token_matches(self, given: str) -> bool:
        return hmac.compare_digest(given.encode(), self.token.encode())

    def refuse_while_backing_off(self, request: web.Request) -> None:
        wait = self.backoff.wait_s(self.address(request))
        if wait > 0:
            raise TooManyAttempts(wait)

    def count_failure(self, request: web.Request, what: str) -> None:
        address = self.address(request)
        failures, wait = self.backoff.failed(address)
        log.warning(
            "%s from %s (%d in a row; next try allowed in %.1f s)", what, address, failures, wait
        )


class TooManyAttempts(ApiError):
    def __init__(self, wait_s: float) -> None:
        super().__init__(
            429,
            "too_many_attempts",
            f"too many wrong tokens; try again in {math.ceil(wait_s)} s",
            retry_after=math.ceil(wait_s),
        )


def _is_websocket(request: web.Request) -> bool:
    return request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"


def _needs_token(path: str) -> bool:
    return not path.startswith(PUBLIC_PREFIXES)


def _is_page(path: str) -> bool:
    return path == "/" or path.startswith("/watch/")


def guard_middleware(guard: Guard) -> Middleware:
    """The middleware running the checks before every handler."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        await guard.check(request)
        return await handler(request)

    return middleware


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every answer, files and errors included, carries the headers."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
