"""A small blocking client for vidd's HTTP API (stdlib only), used by the `vidd` command:
JSON requests, and multipart uploads streamed from disk in chunks."""

from __future__ import annotations

import http.client
import json
import os
import secrets
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

CHUNK = 256 * 1024
MAX_RESPONSE = 16 << 20  # a JSON answer bigger than this is not one vidd would send


class Unreachable(Exception):
    """The daemon could not be reached (refused, unresolvable, timed out)."""


class FileChanged(Exception):
    """The local file could not be read to the end while it was being sent."""


class Refused(Exception):
    """The daemon answered with an HTTP error, or with something that isn't its JSON."""

    def __init__(
        self, status: int, code: str, message: str, job: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        # A refusal that still created a job (a rejected upload: 422) says which one.
        self.job = job


ProgressFn = Callable[[int, int], None]


class Client:
    """One daemon at `url` (http:// or https://), with an optional bearer token."""

    def __init__(self, url: str, token: str = "", timeout: float = 30.0) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http:// or https:// URL: {url!r}")
        self.url = url.rstrip("/")
        self._parts = parts
        self._prefix = parts.path.rstrip("/")
        self.token = token
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    # -- the API ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return _object(self.request("GET", "/api/status"))

    def jobs(self, status: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        return list(self.jobs_page(status, limit)["jobs"])

    def jobs_page(
        self,
        status: str | None = None,
        limit: int | None = None,
        before: str | None = None,
        search: str | None = None,
    ) -> dict[str, Any]:
        """One page of jobs, newest first: {"jobs": [...], "next_before": ID | None, ...};
        `search` is part of a name (the API's `q`)."""
        query: dict[str, str] = {}
        if search:
            query["q"] = search
        if status:
            query["status"] = status
        if limit is not None:
            query["limit"] = str(limit)
        if before:
            query["before"] = before
        data = self.request("GET", "/api/jobs", query)
        # The page may be a bare list or an object with the list under "jobs".
        page = dict(data) if isinstance(data, dict) else {"jobs": data, "next_before": None}
        items = page.get("jobs")
        if not isinstance(items, list):
            raise Refused(200, "bad_response", "expected a list of jobs")
        page["jobs"] = [_object(j) for j in items]
        return page

    def job(self, job_id: str) -> dict[str, Any]:
        return _object(self.request("GET", f"/api/jobs/{_quote(job_id)}"))

    def log(self, job_id: str) -> dict[str, Any]:
        """{"highlights": [...], "lines": [...]}: the encode log, the lines that matter first."""
        return _object(self.request("GET", f"/api/jobs/{_quote(job_id)}/log"))

    def cancel(self, job_id: str) -> dict[str, Any]:
        return _object(self.request("POST", f"/api/jobs/{_quote(job_id)}/cancel"))

    def retry(self, job_id: str, profile: str | None = None) -> dict[str, Any]:
        body = {"profile": profile} if profile else None
        return _object(self.request("POST", f"/api/jobs/{_quote(job_id)}/retry", body=body))

    def delete(self, job_id: str) -> dict[str, Any]:
        return _object(self.request("DELETE", f"/api/jobs/{_quote(job_id)}"))

    def upload(
        self,
        path: Path,
        profile: str | None = None,
        on_progress: ProgressFn | None = None,
        timeout: float = 300.0,
    ) -> dict[str, Any]:
        """POST the file to /api/jobs as multipart (field `file`), streamed in chunks.

        `on_progress(sent, total)` is called after each chunk. The timeout is long because
        the daemon probes the file before it answers.
        """
        boundary = "vidd-" + secrets.token_hex(16)
        head = b""
        if profile:
            head += _part_header(boundary, 'name="profile"') + profile.encode() + b"\r\n"
        name = _header_safe(path.name)
        head += _part_header(
            boundary,
            f'name="file"; filename="{name}"',
            "Content-Type: application/octet-stream\r\n",
        )
        tail = f"\r\n--{boundary}--\r\n".encode()
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            headers = {
                "Content-Type": f"multipart/form-data; boundary={boundary}",
                "Content-Length": str(len(head) + size + len(tail)),
            }
            conn = self._connect(timeout)
            try:
                try:
                    conn.putrequest("POST", self._prefix + "/api/jobs")
                    for key, value in {**self._headers(), **headers}.items():
                        conn.putheader(key, value)
                    conn.endheaders()
                    conn.send(head)
                    _send_file(conn, f, size, on_progress)
                    conn.send(tail)
                except (BrokenPipeError, ConnectionResetError):
                    # The daemon may refuse early (413) and close; its answer can still be read.
                    pass
                except OSError as e:
                    raise Unreachable(f"{self.url}: {_reason(e)}") from None
                return _object(self._response(conn))
            finally:
                conn.close()

    # -- plumbing ----------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> Any:
        target = self._prefix + path
        if query:
            target += "?" + urllib.parse.urlencode(query)
        headers = self._headers()
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn = self._connect(self.timeout)
        try:
            try:
                conn.request(method, target, body=data, headers=headers)
            except OSError as e:
                raise Unreachable(f"{self.url}: {_reason(e)}") from None
            return self._response(conn)
        finally:
            conn.close()

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        p = self._parts
        cls = http.client.HTTPSConnection if p.scheme == "https" else http.client.HTTPConnection
        try:
            return cls(p.hostname or "", p.port, timeout=timeout)
        except ValueError as e:  # a bad port number
            raise ValueError(f"bad URL {self.url!r}: {e}") from None

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "vidd-cli"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _response(self, conn: http.client.HTTPConnection) -> Any:
        try:
            resp = conn.getresponse()
            body = resp.read(MAX_RESPONSE + 1)
        except (OSError, http.client.HTTPException) as e:
            raise Unreachable(f"{self.url}: {_reason(e)}") from None
        if len(body) > MAX_RESPONSE:
            raise Refused(resp.status, "bad_response", "the answer is too large")
        data = _json(body)
        if resp.status >= 400:
            code, message = _error_of(data, resp.status, resp.reason)
            raise Refused(resp.status, code, message, _created_job(data, resp))
        if data is None:
            raise Refused(resp.status, "bad_response", "the answer is not JSON")
        return data


def _send_file(
    conn: http.client.HTTPConnection, f: BinaryIO, size: int, on_progress: ProgressFn | None
) -> None:
    sent = 0
    if on_progress:
        on_progress(0, size)
    while sent < size:
        try:
            chunk = f.read(min(CHUNK, size - sent))
        except OSError as e:
            raise FileChanged(f"{f.name}: {_reason(e)}") from None
        if not chunk:
            # The file shrank while we sent it; the length we promised can't be kept.
            raise FileChanged(f"{f.name}: the file shrank during the upload")
        conn.send(chunk)
        sent += len(chunk)
        if on_progress:
            on_progress(sent, size)


def _part_header(boundary: str, disposition: str, extra: str = "") -> bytes:
    text = f"--{boundary}\r\nContent-Disposition: form-data; {disposition}\r\n{extra}\r\n"
    return text.encode("utf-8")


def _header_safe(name: str) -> str:
    # As browsers do (HTML's multipart encoding): UTF-8, with quotes and control characters
    # percent-encoded, since servers refuse control characters in a header.
    name = name.encode("utf-8", "replace").decode("utf-8")
    return "".join(
        f"%{ord(c):02X}" if c == '"' or ord(c) < 32 or ord(c) == 127 else c for c in name
    )


def _quote(job_id: str) -> str:
    return urllib.parse.quote(job_id, safe="")


def _object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise Refused(200, "bad_response", "expected a JSON object")
    return data


def _json(body: bytes) -> Any:
    """The body's JSON; None for an empty body or one that isn't JSON."""
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


def _error_of(data: Any, status: int, reason: str) -> tuple[str, str]:
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        return str(err.get("code", "error")), str(err.get("message", reason))
    return "http_error", reason or f"HTTP {status}"


JOB_ID_HEADER = "Vidd-Job-Id"


def _created_job(data: Any, resp: http.client.HTTPResponse) -> dict[str, Any] | None:
    """The job a refused upload created: the body's "job", or at least the header's id."""
    job = data.get("job") if isinstance(data, dict) else None
    if isinstance(job, dict) and isinstance(job.get("id"), str):
        return job
    job_id = resp.getheader(JOB_ID_HEADER)
    return {"id": job_id} if job_id else None


def _reason(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "timed out"
    return getattr(e, "strerror", None) or str(e) or type(e).__name__
