"""Error answers: every error the web layer gives is `{"error": {"code", "message"}}`,
including aiohttp's own (unknown route, wrong method, a request it can't parse) and
unexpected exceptions. A busy or full disk or database is a 503 or 507, not a 500."""

from __future__ import annotations

import errno
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import (
    BadHttpMessage,
    BadStatusLine,
    HttpProcessingError,
    LineTooLong,
)
from aiohttp.typedefs import Middleware
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Codes for errors aiohttp raises itself.
STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "too_slow",
    409: "conflict",
    412: "precondition_failed",
    413: "too_large",
    414: "uri_too_long",
    429: "too_many_requests",
    416: "range_not_satisfiable",
    422: "not_video",
    431: "headers_too_large",
    503: "unavailable",
    504: "timeout",
    507: "disk_full",
}

# SQLite's primary result codes (the low byte of an extended one).
SQLITE_BUSY, SQLITE_LOCKED, SQLITE_READONLY, SQLITE_FULL = 5, 6, 8, 13
NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class ApiError(Exception):
    """An error answer: raise it from a handler and the middleware renders it."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
        *,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        if retry_after is not None:  # seconds, for 429 and 503
            self.headers["Retry-After"] = str(retry_after)


def error_response(status: int, code: str, message: str) -> web.Response:
    resp = web.json_response({"error": {"code": code, "message": message}}, status=status)
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _errors() -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as e:
            resp = error_response(e.status, e.code, e.message)
            resp.headers.update(e.headers)
            if e.status in (408, 413):
                resp.force_close()  # the rest of the body is not wanted
            return resp
        except web.HTTPException as e:
            if e.status < 400:
                raise
            code = STATUS_CODES.get(e.status, "error")
            resp = error_response(e.status, code, e.reason)
            for name in ("Allow", "Content-Range"):
                if name in e.headers:
                    resp.headers[name] = e.headers[name]
            return resp
        except (ConnectionError, TimeoutError):
            raise  # the client went away; nothing to answer
        except Exception as e:
            if (known := resource_error(e)) is not None:
                status, code, message = known
                log.warning("%s %s: %d %s: %s", request.method, request.path, status, code, e)
                return error_response(status, code, message)
            log.exception("%s %s: internal error", request.method, request.path)
            return error_response(500, "internal", "vidd hit an internal error; see its log")

    return middleware


errors = _errors()


def resource_error(e: BaseException) -> tuple[int, str, str] | None:
    """(status, code, message) for a failure that is the state of the disk or of the
    database, not a bug: busy, locked or read-only is 503, full is 507. None otherwise."""
    if isinstance(e, sqlite3.OperationalError | sqlite3.DatabaseError):
        primary = _sqlite_code(e)
        if primary in (SQLITE_BUSY, SQLITE_LOCKED):
            return 503, "unavailable", "the database is busy; try again"
        if primary == SQLITE_READONLY:
            return 503, "unavailable", "the database is read-only for now; try again later"
        if primary == SQLITE_FULL:
            return 507, "disk_full", "the disk is full: the database can't grow"
        return None
    if isinstance(e, OSError) and e.errno in NO_SPACE_ERRNOS:
        return 507, "disk_full", "the disk is full"
    return None


def _sqlite_code(e: sqlite3.Error) -> int | None:
    code = getattr(e, "sqlite_errorcode", None)  # Python 3.11+
    if isinstance(code, int):
        return code & 0xFF
    text = str(e).lower()  # the messages of sqlite3_errstr()
    if "database is locked" in text or "database table is locked" in text:
        return SQLITE_LOCKED
    if "readonly database" in text or "read-only" in text:
        return SQLITE_READONLY
    if "database or disk is full" in text:
        return SQLITE_FULL
    return None


# -- errors aiohttp answers before any handler runs ----------------------------------------

# The parser's limits, nudged apart so that its LineTooLong tells which line was too
# long: the request line (414) or a header (431, name and value together).
MAX_REQUEST_LINE = 8190
MAX_HEADER_FIELD = 8192


class JsonErrorRunner(web.AppRunner):
    """An AppRunner whose requests aiohttp can't parse (garbage, a URL or a header too
    long, too many headers) are answered in the usual error shape with one log line,
    instead of plain text and a logged traceback each.

    aiohttp answers these in its protocol class, below the middlewares and without an
    application hook (aio-libs/aiohttp#3287), so the protocol is subclassed here."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        kwargs.setdefault("max_line_size", MAX_REQUEST_LINE)
        kwargs.setdefault("max_field_size", MAX_HEADER_FIELD)
        super().__init__(app, **kwargs)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _Server  # the same object; it now makes _Protocol connections
        return server


class _Server(web.Server):
    def __call__(self) -> RequestHandler:
        return _Protocol(self, loop=self._loop, **self._kwargs)


class _Protocol(RequestHandler):
    __slots__ = ()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError):
            # A handler's exception or timeout that got past the middlewares: aiohttp
            # logs it (a bug deserves its traceback); only the body changes.
            status = super().handle_error(request, status, exc, message).status
            if status == 504:
                resp = error_response(504, "timeout", "vidd took too long to answer")
            else:
                resp = error_response(status, "internal", "vidd hit an internal error; see its log")
        else:
            status, code, text = self._client_error(exc)
            log.info("bad request from %s: %d %s: %s", request.remote, status, code, text)
            if request.writer.output_size > 0:
                raise ConnectionError("an answer was already started; can't send the error")
            resp = error_response(status, code, text)
        resp.force_close()
        return resp

    def _client_error(self, exc: HttpProcessingError) -> tuple[int, str, str]:
        if isinstance(exc, LineTooLong):
            limit = exc.args[1] if len(exc.args) > 1 else None
            if limit == self.max_line_size:
                return 414, "uri_too_long", f"the URL is longer than {limit} bytes"
            if limit == self.max_field_size:
                return 431, "headers_too_large", f"a request header is over {limit} bytes"
        reason = _first_line(exc.message or str(exc))
        if isinstance(exc, BadHttpMessage) and "too many headers" in reason.lower():
            return 431, "headers_too_large", f"more than {self.max_headers} request headers"
        if isinstance(exc, BadStatusLine):
            if "HTTPS" in reason:
                return 400, "bad_request", "this is TLS on a plain HTTP port: use http://"
            return (
                400,
                "bad_request",
                f"not an HTTP request: {reason.rstrip(': ')} "
                "(or bytes left over from a body longer than its Content-Length)",
            )
        if reason.startswith("Data after"):
            return (
                400,
                "bad_request",
                "more bytes came after the end of the request: "
                "is its body longer than its Content-Length?",
            )
        return 400, "bad_request", f"not a valid HTTP request: {reason}"


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0][:200] if lines else "unreadable"
