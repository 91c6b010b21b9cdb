"""Reading a small request body whole, within a limit.

`StreamReader.read(n)` returns only what has arrived so far, so a body sent in two TCP
segments must be read in a loop; the limit is checked as it grows, never after.
"""

from __future__ import annotations

from aiohttp import web

from .errors import ApiError

CHUNK = 16 * 1024


async def read_whole(request: web.Request, limit: int, too_large: str) -> bytes:
    """The whole body, at most `limit` bytes; beyond it ApiError 413 with `too_large`."""
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "too_large", too_large)
    body = bytearray()
    while chunk := await request.content.read(CHUNK):
        body += chunk
        if len(body) > limit:
            raise ApiError(413, "too_large", too_large)
    return bytes(body)
