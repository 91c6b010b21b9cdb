"""A small front for the worker's tests: an aiohttp server with the worker routes of
contracts.md (claim, source with Range, progress, log, output, fail), recording every
call, with knobs for what a test needs the front to do: refuse a claim (409), cut the
source off mid-download, say stop (410), or go away (connections refused) and come back
on the same port.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from testkit import media
from testkit.daemon import free_port

BASE = "/api/workers/attempts/{attempt}"
MAX_JSON = 64 << 10


@dataclass
class Attempt:
    """One attempt as the fake front knows it, and what the worker did with it."""

    id: str
    token: str
    job: str
    source: Path
    args: list[str]
    duration: float
    lease_s: float = 60.0
    max_output_bytes: int = 1 << 30
    claim_status: int = 200  # 409: the attempt is superseded
    stop: bool = False  # progress answers 410 stop
    cut_source_at: int | None = None  # the first GET of the source drops after this many bytes
    output_answers: list[int] = field(default_factory=list)  # statuses for the first PUTs
    output_answer_after_s: float = 0.0  # how long each of those PUTs takes to answer
    answer_in_pieces: bool = False  # claim answers (and their errors) arrive in two writes
    claim_padding: int = 0  # characters of an extra field in the claim answer
    claims: int = 0
    source_requests: list[str | None] = field(default_factory=list)  # their Range headers
    progress: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    output: bytes | None = None
    output_puts: int = 0
    released: int = 0  # POST release: the worker handed the attempt back

    def kwargs(self, front: str) -> dict[str, Any]:
        from vidd.celery_app import Dispatch

        return Dispatch(self.id, self.token, front, tuple(self.args)).to_kwargs()


class FakeFront:
    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port()
        self.attempts: dict[str, Attempt] = {}
        self.refused: list[tuple[str, int]] = []  # (route, status) of refused calls
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def add(
        self, job: str, source: Path, args: list[str], duration: float | None = None, **knobs: Any
    ) -> Attempt:
        """A new attempt at `job` (the source's duration as ffprobe reads it unless given)."""
        if duration is None:
            duration = media.duration(source)
        attempt = Attempt(
            id=secrets.token_urlsafe(12), token=secrets.token_urlsafe(24), job=job,
            source=source, args=args, duration=duration, **knobs,
        )  # fmt: skip
        self.attempts[attempt.id] = attempt
        return attempt

    async def start(self) -> FakeFront:
        app = web.Application(client_max_size=2 << 30)
        base = BASE
        app.router.add_post(f"{base}/claim", self._claim)
        app.router.add_get(f"{base}/source", self._source)
        app.router.add_post(f"{base}/progress", self._progress)
        app.router.add_post(f"{base}/log", self._log)
        app.router.add_put(f"{base}/output", self._output)
        app.router.add_post(f"{base}/fail", self._fail)
        app.router.add_post(f"{base}/release", self._release)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port, reuse_address=True).start()
        return self

    async def stop(self) -> None:
        """Go away: the port refuses connections until start() again."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- the routes ------------------------------------------------------------------------

    def _error(self, route: str, status: int, code: str) -> web.Response:
        self.refused.append((route, status))
        return web.json_response({"error": {"code": code, "message": code}}, status=status)

    def _attempt(self, request: web.Request) -> Attempt | web.Response:
        if "Origin" in request.headers or "Sec-Fetch-Site" in request.headers:
            return self._error(request.path, 403, "forbidden")
        attempt = self.attempts.get(request.match_info["attempt"])
        if attempt is None or request.headers.get("Authorization") != f"Bearer {attempt.token}":
            return self._error(request.path, 401, "unauthorized")
        return attempt

    async def _body(self, request: web.Request) -> dict[str, Any]:
        raw = bytearray()  # read(n) gives what has arrived so far: read to the end
        while chunk := await request.content.read(MAX_JSON + 1 - len(raw)):
            raw += chunk
            assert len(raw) <= MAX_JSON, "a JSON body over 64 KiB"
        body = json.loads(raw)
        assert isinstance(body, dict)
        return body

    async def _claim(self, request: web.Request) -> web.StreamResponse:
        attempt = self._attempt(request)
        if isinstance(attempt, web.Response):
            return attempt
        body = await self._body(request)
        assert 1 <= len(body["worker"]) <= 100
        if attempt.claim_status != 200:
            attempt.claims += 1
            return await self._answer(request, attempt, "claim", attempt.claim_status, "superseded")
        if attempt.claims:
            return await self._answer(request, attempt, "claim", 409, "claimed")
        attempt.claims += 1
        return await self._answer(
            request,
            attempt,
            "claim",
            200,
            {
                "job": attempt.job,
                "source": {
                    "size": attempt.source.stat().st_size,
                    "duration": attempt.duration,
                    "ext": attempt.source.suffix,
                    "width": 320,
                    "height": 240,
                    "video_codec": "mpeg4",
                    "audio_codecs": ["mp3"],
                },
                "args": attempt.args,
                "lease_s": attempt.lease_s,
                "progress_interval_s": 0.25,
                "max_output_bytes": attempt.max_output_bytes,
                **({"padding": "x" * attempt.claim_padding} if attempt.claim_padding else {}),
            },
        )

    async def _answer(
        self,
        request: web.Request,
        attempt: Attempt,
        route: str,
        status: int,
        body: dict[str, Any] | str,
    ) -> web.StreamResponse:
        """A JSON answer (an error's code when `body` is a str); with the attempt's
        answer_in_pieces, sent in two writes a moment apart, as a slow network would."""
        if isinstance(body, str):
            self.refused.append((route, status))
            body = {"error": {"code": body, "message": body}}
        if not attempt.answer_in_pieces:
            return web.json_response(body, status=status)
        data = json.dumps(body).encode()
        resp = web.StreamResponse(status=status)
        resp.content_type = "application/json"
        resp.content_length = len(data)
        await resp.prepare(request)
        await resp.write(data[: len(data) // 2])
        await asyncio.sleep(0.05)
        await resp.write(data[len(data) // 2 :])
        await resp.write_eof()
        return resp

    async def _source(self, request: web.Request) -> web.StreamResponse:
        attempt = self._attempt(request)
        if isinstance(attempt, web.Response):
            return attempt
        attempt.source_requests.append(request.headers.get("Range"))
        data = attempt.source.read_bytes()
        start = 0
        if (rng := request.headers.get("Range")) is not None:
            start = int(rng.removeprefix("bytes=").split("-")[0])
        resp = web.StreamResponse(status=206 if start else 200)
        resp.content_length = len(data) - start
        resp.content_type = "application/octet-stream"
        if start:
            resp.headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        await resp.prepare(request)
        cut = attempt.cut_source_at
        if cut is not None and len(attempt.source_requests) == 1:
            await resp.write(data[start:cut])
            assert request.transport is not None
            request.transport.close()  # the connection drops mid-body
            return resp
        await resp.write(data[start:])
        await resp.write_eof()
        return resp

    async def _progress(self, request: web.Request) -> web.StreamResponse:
        attempt = self._attempt(request)
        if isinstance(attempt, web.Response):
            return attempt
        body = await self._body(request)
        assert 0 <= body["progress"] <= 1
        attempt.progress.append((time.monotonic(), body))
        if attempt.stop:
            return self._error("progress", 410, "stop")
        return web.Response(status=204)

    async def _log(self, request: web.Request) -> web.StreamResponse:
        attempt = self._attempt(request)
        if isinstance(attempt, web.Response):
            return attempt
        attempt.logs.append((await self._body(request))["tail"])
        return web.Response(status=204)

    async def _output(self, request: web.Request) -> web.StreamResponse:
        attempt = self._attempt(request)
        if isinstance(attempt, web.Response):
            return attempt
        attempt.output_puts += 1
        if attempt.output_answers:
            await request.read()
            await asyncio.sleep(attempt.output_answer_after_s)  # a long transfer, then a drop
            status = attempt.output_answers.pop(0)
            return self._error("output", status, "bad_output" if status == 422 else "unavailable")
        if request.content_length is None:
            return self._error("output", 411, "length_required")
        if request.content_length > attempt.max_output_bytes:
            return self._error("output", 413, "too_large")
        attempt.output = await request.read()
        return web.json_response({"status": "done"})

    async def _release(self, request: web.Request) -> web.StreamResponse:
        attempt = self._attempt(request)
        if isinstance(attempt, web.Response):
            return attempt
        attempt.released += 1
        return web.Response(status=204)

    async def _fail(self, request: web.Request) -> web.StreamResponse:
        attempt = self._attempt(request)
        if isinstance(attempt, web.Response):
            return attempt
        attempt.failures.append(await self._body(request))
        return web.Response(status=204)
