"""A small blocking tus 1.0 client (stdlib only) for `vidd submit`: create the upload,
PATCH the file in chunks, and after a dropped connection or a daemon restart ask the
server for its offset (HEAD) and go on from there. The upload's URL is remembered per
file in a small JSON file, so a second `vidd submit` of the same file resumes it too.

The entry point is `send(client, path, profile, on_progress)`, a drop-in for
`Client.upload`: the job's JSON, or Refused(422) with the job for a file that is not a video.
An exception raised by `on_progress` stops the upload and is passed on unchanged.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import http.client
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from .client import (
    CHUNK,
    Client,
    FileChanged,
    ProgressFn,
    Refused,
    Unreachable,
    _error_of,
    _json,
    _reason,
)

log = logging.getLogger(__name__)

CHUNK_SIZE = 50 << 20  # one PATCH: under a proxy's 100 MB body limit
RETRY_DELAYS = (1.0, 3.0, 5.0, 10.0, 20.0, 30.0)  # then it gives up (Unreachable)
# 409 (offset moved on), 423 (locked, from other servers), 460 (checksum), and vidd's
# own "wait and retry" answers: after each, HEAD tells where to go on from.
RETRY_STATUSES = frozenset({408, 409, 423, 429, 460, 500, 502, 503, 504})
TUS = {"Tus-Resumable": "1.0.0"}


class _Dropped(Exception):
    """The connection broke, or the server answered with something worth retrying."""


@dataclass
class TusSender:
    """How to send: chunk size, the waits between retries, per-PATCH checksums, where
    upload URLs are remembered (None: not at all), and the clock's sleep (for tests)."""

    client: Client
    chunk_size: int = CHUNK_SIZE
    retry_delays: Sequence[float] = RETRY_DELAYS
    checksum: bool = False
    resume_file: Path | None = None
    sleep: Callable[[float], None] = time.sleep
    timeout: float = 300.0  # the last PATCH waits for the probe
    patches: int = field(default=0, init=False)  # PATCH requests made, for the curious

    def send(
        self, path: Path, profile: str | None = None, on_progress: ProgressFn | None = None
    ) -> dict[str, Any]:
        """Upload `path` (resuming an earlier upload of the same file if the server still
        has it) and return its job's JSON. Raises Refused for an answer that retrying
        can't change (400, 401, 413, ...), Unreachable once the retries are spent."""
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            length = st.st_size
            key = _fingerprint(self.client.url, path, st)
            url, offset = self._resume(key)
            if url is None:
                try:
                    url = self._create(path.name, length, profile)
                except _Dropped as e:
                    raise Unreachable(f"{self.client.url}: {e}") from None
                self._remember(key, url)
                offset = 0
            failures = 0
            if on_progress:
                on_progress(offset, length)
            while True:
                try:
                    if offset < length:
                        offset = self._patch(f, url, offset, length, on_progress)
                        failures = 0
                        continue
                    job_id = self._job_of(url, length)
                    break
                except _Dropped as e:
                    if failures >= len(self.retry_delays):
                        raise Unreachable(
                            f"{self.client.url}: {e} (gave up after retries)"
                        ) from None
                    delay = self.retry_delays[failures]
                    failures += 1
                    log.info("upload of %s: %s; resuming in %g s", path.name, e, delay)
                    self.sleep(delay)
                    offset = self._offset_or_keep(url, offset)
        self._forget(key)
        return self.client.job(job_id)

    # --- the protocol ---------------------------------------------------------------------

    def _create(self, name: str, length: int, profile: str | None) -> str:
        meta = {"filename": name, **({"profile": profile} if profile else {})}
        headers = {
            **TUS,
            "Upload-Length": str(length),
            "Upload-Metadata": ",".join(
                f"{k} {base64.b64encode(v.encode('utf-8', 'replace')).decode()}"
                for k, v in meta.items()
            ),
        }
        status, resp_headers, _ = self._request("POST", self._path("/api/uploads"), headers)
        location = resp_headers.get("location")
        if status != 201 or not location:
            raise Refused(status, "bad_response", "the server did not create the upload")
        return location

    def _head(self, url: str) -> int | None:
        """The server's offset; None when it no longer has the upload."""
        status, headers, _ = self._request("HEAD", url, dict(TUS), allow=(404, 410))
        if status in (404, 410):
            return None
        return int(headers.get("upload-offset", "0"))

    def _offset_or_keep(self, url: str, offset: int) -> int:
        try:
            found = self._head(url)
        except _Dropped:
            return offset  # still away: the next try asks again
        if found is None:
            raise Refused(404, "not_found", "the server dropped the upload (expired?)")
        return found

    def _patch(
        self,
        f: BinaryIO,
        url: str,
        offset: int,
        length: int,
        on_progress: ProgressFn | None,
    ) -> int:
        size = min(self.chunk_size, length - offset)
        headers = {
            **TUS,
            "Content-Type": "application/offset+octet-stream",
            "Upload-Offset": str(offset),
            "Content-Length": str(size),
        }
        if self.checksum:
            headers["Upload-Checksum"] = "sha256 " + _sha256_of(f, offset, size)
        self.patches += 1
        conn = self._connect()
        try:
            try:
                conn.putrequest("PATCH", url)
                for k, v in {**self.client_headers(), **headers}.items():
                    conn.putheader(k, v)
                conn.endheaders()
            except OSError as e:
                raise _Dropped(_reason(e)) from None
            f.seek(offset)
            sent = 0
            while sent < size:
                try:
                    piece = f.read(min(CHUNK, size - sent))
                except OSError as e:
                    raise FileChanged(f"{f.name}: {e}") from None
                if not piece:
                    raise FileChanged(f"{f.name}: the file shrank during the upload")
                try:
                    conn.send(piece)
                except OSError as e:
                    raise _Dropped(_reason(e)) from None
                sent += len(piece)
                if on_progress:  # outside any try: its exception stops the upload
                    on_progress(offset + sent, length)
            status, resp_headers, body = self._answer(conn)
        finally:
            conn.close()
        if status == 204:
            return int(resp_headers.get("upload-offset", offset + size))
        self._raise(status, body)
        raise AssertionError("unreachable")

    def _job_of(self, url: str, length: int) -> str:
        """The job a complete upload became. Its final answer may have been lost (or the
        admission refused for now): the server's record says, or an empty PATCH at the
        end asks it to admit the file again."""
        status, _, body = self._request("GET", url, dict(TUS))
        state = _json(body)
        job_id = state.get("job_id") if isinstance(state, dict) else None
        if isinstance(job_id, str) and job_id:
            return job_id
        headers = {
            **TUS,
            "Content-Type": "application/offset+octet-stream",
            "Upload-Offset": str(length),
        }
        _, resp_headers, _ = self._request("PATCH", url, headers)
        job_id = resp_headers.get("vidd-job-id")
        if not job_id:
            raise _Dropped("the complete upload has no job yet")
        return job_id

    # --- plumbing -------------------------------------------------------------------------

    def client_headers(self) -> dict[str, str]:
        # The client's own (agent, token), less its Accept: tus answers aren't all JSON.
        headers = self.client._headers()
        del headers["Accept"]
        return headers

    def _path(self, path: str) -> str:
        return self.client._prefix + path

    def _connect(self) -> http.client.HTTPConnection:
        return self.client._connect(self.timeout)

    def _request(
        self, method: str, url: str, headers: dict[str, str], allow: tuple[int, ...] = ()
    ) -> tuple[int, dict[str, str], bytes]:
        conn = self._connect()
        try:
            try:
                conn.request(method, url, headers={**self.client_headers(), **headers})
            except OSError as e:
                raise _Dropped(_reason(e)) from None
            status, resp_headers, body = self._answer(conn)
        finally:
            conn.close()
        if status >= 400 and status not in allow:
            self._raise(status, body)
        return status, resp_headers, body

    def _answer(self, conn: http.client.HTTPConnection) -> tuple[int, dict[str, str], bytes]:
        try:
            resp = conn.getresponse()
            body = resp.read(1 << 20)
        except (OSError, http.client.HTTPException) as e:
            raise _Dropped(_reason(e)) from None
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body

    def _raise(self, status: int, body: bytes) -> None:
        code, message = _error_of(_json(body), status, "")
        if status in RETRY_STATUSES:
            raise _Dropped(f"{status} {code}: {message}")
        raise Refused(status, code, message)

    # --- remembering upload URLs across runs ------------------------------------------------

    def _resume(self, key: str) -> tuple[str | None, int]:
        url = self._load().get(key)
        if not isinstance(url, str):
            return None, 0
        try:
            offset = self._head(url)
        except _Dropped as e:
            raise Unreachable(f"{self.client.url}: {e}") from None
        except Refused:
            offset = None
        if offset is None:
            self._forget(key)
            return None, 0
        log.info("resuming an earlier upload at byte %d", offset)
        return url, offset

    def _load(self) -> dict[str, Any]:
        if self.resume_file is None:
            return {}
        try:
            data = json.loads(self.resume_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _remember(self, key: str, url: str) -> None:
        self._update(lambda data: data.__setitem__(key, url))

    def _forget(self, key: str) -> None:
        self._update(lambda data: data.pop(key, None))

    def _update(self, change: Callable[[dict[str, Any]], object]) -> None:
        """Read, change and write the resume file under a lock, through a temp file of its
        own: several sends at once (threads or processes) never lose each other's URLs."""
        if self.resume_file is None:
            return
        folder = self.resume_file.parent
        with contextlib.suppress(OSError):  # resuming is a convenience, never a failure
            folder.mkdir(parents=True, exist_ok=True)
            lock = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)  # the folder is the lock
            try:
                fcntl.flock(lock, fcntl.LOCK_EX)
                data = self._load()
                change(data)
                fd, tmp = tempfile.mkstemp(dir=folder, prefix=".resume-", suffix=".tmp")
                try:
                    with os.fdopen(fd, "w", encoding="utf-8") as f:
                        json.dump(data, f)
                    os.replace(tmp, self.resume_file)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)
                    raise
            finally:
                os.close(lock)


def send(
    client: Client,
    path: Path,
    profile: str | None = None,
    on_progress: ProgressFn | None = None,
    *,
    resume_file: Path | None = None,
) -> dict[str, Any]:
    """`vidd submit`'s way in, a drop-in for `Client.upload`: a resumable upload of `path`,
    its job's JSON; a file that is not a video is Refused(422) with its job, as there."""
    job = TusSender(client, resume_file=resume_file).send(path, profile, on_progress)
    if job.get("status") == "rejected":
        found = job.get("error")
        err: dict[str, Any] = found if isinstance(found, dict) else {}
        raise Refused(
            422,
            str(err.get("code", "not_video")),
            str(err.get("message", "HandBrake can't read this file")),
            job=job,
        )
    return job


def default_resume_file() -> Path:
    """Where `vidd submit` remembers unfinished uploads (XDG cache)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "vidd" / "uploads.json"


def _fingerprint(server: str, path: Path, st: os.stat_result) -> str:
    """The same file (path, size, mtime) to the same server."""
    return f"{server}|{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def _sha256_of(f: BinaryIO, offset: int, size: int) -> str:
    h = hashlib.sha256()
    f.seek(offset)
    left = size
    while left > 0:
        piece = f.read(min(CHUNK, left))
        if not piece:
            raise FileChanged(f"{f.name}: the file shrank during the upload")
        h.update(piece)
        left -= len(piece)
    return base64.b64encode(h.digest()).decode()
