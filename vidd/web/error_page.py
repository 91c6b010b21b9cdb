"""The error page a browser gets: a request for a page (not /api/, Accept naming
text/html) that ends in an error answers static/error.html instead of the JSON error.

The page is a fixed template filled from the fixed words below, chosen by status alone,
and the error's code (one of vidd's own, checked to be a plain word): nothing from the
request (its path, its id, a name) ever reaches it. The API and clients that did not ask
for HTML keep the JSON error shape."""

from __future__ import annotations

import functools
import html
import json
import logging
import re
import string
from pathlib import Path

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

from .errors import Handler
from .keys import STATIC_DIR

log = logging.getLogger(__name__)

TEMPLATE = "error.html"
# status -> (title, sentence)
WORDS: dict[int, tuple[str, str]] = {
    400: ("That didn't work", "vidd couldn't make sense of this request."),
    401: ("Sign in first", "This needs the token vidd was set up with."),
    403: ("Not allowed", "This address can't be opened from here."),
    404: (
        "Nothing here",
        "There is no page at this address. The video may have been deleted, "
        "or the link is incomplete.",
    ),
    405: ("Not like that", "This address can't be opened that way."),
    413: ("Too large", "That was more than vidd accepts."),
    429: ("Too many tries", "Wait a moment, then try again."),
    500: ("Something went wrong", "vidd ran into a problem of its own. Its log says more."),
    503: ("Not available right now", "vidd can't answer at the moment. Try again shortly."),
    507: ("The disk is full", "vidd has no room left on its disk."),
}
OTHER = ("Something went wrong", "vidd couldn't answer this request.")
CODE = re.compile(r"[a-z_]{1,40}")
# Kept from the JSON answer: they say how to ask again.
KEPT_HEADERS = (hdrs.ALLOW, hdrs.RETRY_AFTER)


def wants_html(request: web.BaseRequest) -> bool:
    """A browser asking for a page: not the API, and text/html is acceptable."""
    if request.path.startswith("/api/"):
        return False
    return "text/html" in request.headers.get(hdrs.ACCEPT, "").lower()


@functools.lru_cache(maxsize=4)
def _template(path: Path) -> string.Template | None:
    try:
        return string.Template(path.read_text(encoding="utf-8"))
    except OSError as e:
        log.warning("web: no error page (%s); browsers get JSON errors", e)
        return None


def page(static_dir: Path, status: int, code: str = "error") -> bytes | None:
    """The error page for `status`, or None when the template can't be read."""
    template = _template(static_dir / TEMPLATE)
    if template is None:
        return None
    title, message = WORDS.get(status, OTHER)
    text = template.safe_substitute(
        title=html.escape(title),
        message=html.escape(message),
        status=str(int(status)),
        code=code if CODE.fullmatch(code) else "error",
    )
    return text.encode()


def _code(resp: web.Response) -> str:
    """The code of a JSON error answer ("not_found"), or "error"."""
    try:
        code = json.loads(resp.body)["error"]["code"]  # type: ignore[arg-type]
    except (TypeError, ValueError, KeyError):
        return "error"
    return code if isinstance(code, str) else "error"


def _error_pages() -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        resp = await handler(request)
        # Only the JSON error answers the errors middleware made; never a stream, a file
        # or a redirect.
        if (
            resp.status < 400
            or not isinstance(resp, web.Response)
            or resp.content_type != "application/json"
            or not wants_html(request)
        ):
            return resp
        body = page(request.app[STATIC_DIR], resp.status, _code(resp))
        if body is None:
            return resp
        answer = web.Response(
            body=body,
            status=resp.status,
            content_type="text/html",
            charset="utf-8",
            headers={hdrs.CACHE_CONTROL: "no-store"},
        )
        for name in KEPT_HEADERS:
            if name in resp.headers:
                answer.headers[name] = resp.headers[name]
        if resp.keep_alive is False:
            answer.force_close()
        return answer

    return middleware


error_pages = _error_pages()
