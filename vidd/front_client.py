"""The worker's side of the worker routes (contracts.md): one attempt's HTTP calls to the
front, each mapped to what the worker does next.

- `Stop`: the front says this attempt is not (or no longer) ours to run: 409 on claim or
  on a later call, 410 on progress, 401 (unknown attempt or wrong token). Drop the task.
- `Unreachable`: no answer, or a 5xx: the front may be restarting. Retry while the lease
  holds.
- `Refused`: any other answer the worker cannot act on (a bug on one side); logged.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from .celery_app import Dispatch
from .job import MediaInfo, is_valid_id

MAX_JSON = 64 << 10  # the front refuses a JSON body over 64 KiB (413)
MAX_ANSWER = 1 << 20  # a JSON answer bigger than this is not the front's
MAX_CODE, MAX_MESSAGE = 40, 1000
DOWNLOAD_CHUNK = 256 << 10
CALL_TIMEOUT = aiohttp.ClientTimeout(total=10.0, sock_connect=5.0)
# Transfers: no total bound (files are large); a stalled socket counts as a drop.
TRANSFER_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=5.0, sock_read=60.0)
_EXT = re.compile(r"\.[A-Za-z0-9]{1,10}")
# The attempt id becomes a URL path segment and the token a header: both are the front's
# secrets.token_urlsafe, so anything else in a message is refused before it is used.
_URL_SAFE = re.compile(r"[A-Za-z0-9_-]{1,200}")


class Stop(Exception):
    """The front no longer wants this attempt run (409, 410, 401): drop the task."""

    def __init__(self, status: int, code: str) -> None:
        super().__init__(f"{status} {code}")
        self.status = status
        self.code = code


class Unreachable(Exception):
    """No answer from the front, or a 5xx: it may come back within the lease."""


class Refused(Exception):
    """An answer the worker cannot act on (a 4xx other than the above, a bad body)."""


class Rejected(Exception):
    """The front verified the output and refused it (422): the job has failed there."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Claim:
    """What the front answers to a claim."""

    job: str
    source: MediaInfo
    source_ext: str
    args: tuple[str, ...]
    lease_s: float
    progress_interval_s: float
    max_output_bytes: int

    @classmethod
    def from_json(cls, data: Any) -> Claim:
        """The claim answer, checked: the job id and extension become file names."""
        try:
            src = data["source"]
            job, ext = data["job"], src["ext"]
            if not isinstance(job, str) or not is_valid_id(job):
                raise ValueError("job")
            if not isinstance(ext, str) or (ext and not _EXT.fullmatch(ext)):
                raise ValueError("source.ext")
            source = MediaInfo(
                size=_count(src["size"]),
                duration=_number(src["duration"]),
                width=_count(src.get("width", 0)),
                height=_count(src.get("height", 0)),
                video_codec=str(src.get("video_codec") or "")[:100],
                audio_codecs=tuple(str(c)[:100] for c in (src.get("audio_codecs") or ())[:64]),
            )
            args = data.get("args", [])
            if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
                raise ValueError("args")
            return cls(
                job=job,
                source=source,
                source_ext=ext.lower(),
                args=tuple(args),
                lease_s=max(1.0, _number(data["lease_s"])),
                progress_interval_s=max(0.25, _number(data.get("progress_interval_s", 0.25))),
                max_output_bytes=_count(data["max_output_bytes"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise Refused(f"the front's claim answer is not one vidd sends ({e})") from None


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(repr(value))
    if value < 0:
        raise ValueError(repr(value))
    return float(value)


def _finite(value: float | None) -> float | None:
    """A number the front accepts (finite, not negative), or None."""
    return value if value is not None and math.isfinite(value) and value >= 0 else None


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(repr(value))
    return value


def fit_json(body: dict[str, Any], text_key: str) -> dict[str, Any]:
    """`body` with its `text_key` cut from the front (a log's end is what matters) so that
    the whole JSON fits in MAX_JSON bytes."""
    text = str(body.get(text_key, ""))[-MAX_JSON:]  # every character is a byte or more

    def fits(start: int) -> bool:
        return len(json.dumps({**body, text_key: text[start:]}).encode()) <= MAX_JSON

    low, high = 0, len(text)  # the first start that fits: the JSON shrinks as it grows
    while low < high:
        mid = (low + high) // 2
        if fits(mid):
            high = mid
        else:
            low = mid + 1
    return {**body, text_key: text[low:]}


class FrontClient:
    """The worker routes of one attempt, over one aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession, dispatch: Dispatch) -> None:
        """Refused when the message's attempt id or token is not one the front makes."""
        if not _URL_SAFE.fullmatch(dispatch.attempt) or not _URL_SAFE.fullmatch(dispatch.token):
            raise Refused("the message's attempt id or token is not URL-safe")
        self._session = session
        self.base = f"{dispatch.front.rstrip('/')}/api/workers/attempts/{dispatch.attempt}"
        self._headers = {"Authorization": f"Bearer {dispatch.token}"}

    def __repr__(self) -> str:
        return f"<FrontClient {self.base}>"

    async def claim(self, worker: str) -> Claim:
        data = await self._json("POST", "claim", {"worker": worker[:100]})
        return Claim.from_json(data)

    async def progress(self, progress: float, fps: float | None, eta_s: float | None) -> None:
        """The heartbeat: Stop on 410 (the front says stop now)."""
        body = {
            "progress": min(1.0, max(0.0, progress)),
            "fps": _finite(fps),
            "eta_s": _finite(eta_s),
        }
        await self._json("POST", "progress", body)

    async def log(self, tail: str) -> None:
        await self._json("POST", "log", fit_json({"tail": tail}, "tail"))

    async def fail(self, code: str, message: str, log_tail: str) -> None:
        body = {"code": code[:MAX_CODE], "message": message[:MAX_MESSAGE], "log_tail": log_tail}
        await self._json("POST", "fail", fit_json(body, "log_tail"))

    async def release(self) -> None:
        """Hand the claimed attempt back (this worker is stopping)."""
        await self._json("POST", "release", {})

    async def download(self, path: Path, size: int) -> int:
        """Fetch the source into `path`, resuming after what is there already (Range).
        Returns the bytes it now holds; raises Unreachable on a drop (call again)."""
        have = path.stat().st_size if path.exists() else 0
        if have > size:
            path.unlink()
            have = 0
        if have == size:
            return have
        headers = {**self._headers, "Range": f"bytes={have}-"} if have else self._headers
        try:
            async with self._session.get(
                f"{self.base}/source", headers=headers, timeout=TRANSFER_TIMEOUT
            ) as resp:
                await self._check(resp)
                if resp.status == 200:
                    have = 0  # the whole file again: start over
                elif resp.status != 206:
                    raise Refused(f"GET source: unexpected {resp.status}")
                elif not resp.headers.get("Content-Range", "").startswith(f"bytes {have}-"):
                    raise Refused("GET source: a 206 that does not start where we asked")
                with path.open("r+b" if have else "wb") as f:
                    f.seek(have)
                    f.truncate()
                    async for chunk in resp.content.iter_chunked(DOWNLOAD_CHUNK):
                        if have + len(chunk) > size:
                            raise Refused("the source is longer than the front said")
                        f.write(chunk)
                        have += len(chunk)
        except (TimeoutError, aiohttp.ClientError, ConnectionError) as e:
            # (Any other OSError is this host's disk, not the network: it goes up.)
            raise Unreachable(f"GET source: {e!r}") from None
        if have != size:
            raise Unreachable(f"GET source: the download ended at {have} of {size} bytes")
        return have

    async def upload(self, path: Path) -> None:
        """PUT the output; returns once the front has verified and recorded it. Rejected on
        422; Unreachable on a network error (send it again)."""
        headers = {
            **self._headers,
            "Content-Type": "video/mp4",
            "Content-Length": str(path.stat().st_size),
        }
        try:
            with path.open("rb") as f:
                async with self._session.put(
                    f"{self.base}/output", data=f, headers=headers, timeout=TRANSFER_TIMEOUT
                ) as resp:
                    if resp.status == 422:
                        code, message = await _error_of(resp)
                        raise Rejected(code, message)
                    await self._check(resp)
                    if resp.status != 200:
                        raise Refused(f"PUT output: unexpected {resp.status}")
        except (TimeoutError, aiohttp.ClientError, ConnectionError) as e:
            raise Unreachable(f"PUT output: {e!r}") from None

    # -- plumbing ----------------------------------------------------------------------------

    async def _json(self, method: str, route: str, body: dict[str, Any]) -> Any:
        try:
            async with self._session.request(
                method,
                f"{self.base}/{route}",
                json=body,
                headers=self._headers,
                timeout=CALL_TIMEOUT,
            ) as resp:
                await self._check(resp)
                if resp.status == 204:
                    return None
                if resp.status != 200:
                    raise Refused(f"{method} {route}: unexpected {resp.status}")
                raw = await _body_of(resp, MAX_ANSWER)
                if raw is None:
                    raise Refused(f"{method} {route}: the answer is too large")
                try:
                    return json.loads(raw)
                except ValueError:
                    raise Refused(f"{method} {route}: the answer is not JSON") from None
        except (TimeoutError, aiohttp.ClientError, ConnectionError) as e:
            raise Unreachable(f"{method} {route}: {e!r}") from None

    @staticmethod
    async def _check(resp: aiohttp.ClientResponse) -> None:
        """Raise for an answer that is not a success."""
        if resp.status < 300:
            return
        code, message = await _error_of(resp)
        if resp.status in (401, 409, 410):
            raise Stop(resp.status, code)
        if resp.status >= 500:
            raise Unreachable(f"{resp.status} {code}: {message}")
        raise Refused(f"{resp.method} {resp.url.path}: {resp.status} {code}: {message}")


async def _body_of(resp: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The whole body (StreamReader.read(n) gives only what has arrived so far), or None
    as soon as it passes `limit` bytes: never read whole."""
    body = bytearray()
    while chunk := await resp.content.read(limit + 1 - len(body)):
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


async def _error_of(resp: aiohttp.ClientResponse) -> tuple[str, str]:
    """The code and message of the front's JSON error, or the status's reason."""
    try:
        raw = await _body_of(resp, MAX_JSON)
        if raw is None:
            raise ValueError("too large")
        error = json.loads(raw)["error"]
        return str(error["code"])[:MAX_CODE], str(error.get("message", ""))[:MAX_MESSAGE]
    except (ValueError, KeyError, TypeError, aiohttp.ClientError):
        return str(resp.reason or resp.status), ""
