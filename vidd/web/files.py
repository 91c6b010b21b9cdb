"""Files from disk (the pages, their assets, videos and posters) as aiohttp's FileResponse
answers them (Range, conditional GET, sendfile), except that its refusals carry vidd's
error body too: FileResponse decides on those only while it is being sent, past the
errors middleware, and would send them empty."""

from __future__ import annotations

import json

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.web_request import BaseRequest

from .errors import STATUS_CODES

MESSAGES = {
    403: "that is not a file that can be served",
    404: "the file is missing",
    412: "the file does not meet the request's precondition",
    416: "the range lies outside the file",
}


class _ErrorBody(web.StreamResponse):
    """Sits between FileResponse and StreamResponse in FileAnswer's MRO: FileResponse sets
    an error status and calls on to StreamResponse.prepare, which lands here first."""

    async def prepare(self, request: BaseRequest) -> AbstractStreamWriter | None:
        if self.status < 400 or self.prepared:
            return await super().prepare(request)
        code = STATUS_CODES.get(self.status, "error")
        message = MESSAGES.get(self.status, self.reason)
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        self.content_type = "application/json"
        self.content_length = len(body)
        self.headers[hdrs.CACHE_CONTROL] = "no-store"
        self.headers.pop(hdrs.CONTENT_DISPOSITION, None)
        writer = await super().prepare(request)
        if request.method != hdrs.METH_HEAD:
            await self.write(body)
        return writer


class FileAnswer(web.FileResponse, _ErrorBody):
    """A FileResponse whose 403, 404, 412 and 416 answers are `{"error": {...}}`."""
