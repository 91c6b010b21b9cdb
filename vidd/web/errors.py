"""Error answers: every error the web layer gives is `{"error": {"code", "message"}}`,
including aiohttp's own (unknown route, wrong method) and unexpected exceptions."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from aiohttp.typedefs import Middleware

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Codes for errors aiohttp raises itself.
STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    416: "range_not_satisfiable",
    422: "not_video",
    503: "unavailable",
    507: "disk_full",
}


class ApiError(Exception):
    """An error answer: raise it from a handler and the middleware renders it."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


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
            if e.status == 413:
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
        except Exception:
            log.exception("%s %s: internal error", request.method, request.path)
            return error_response(500, "internal", "vidd hit an internal error; see its log")

    return middleware


errors = _errors()
