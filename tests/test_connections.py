"""Strangers holding connections: a real vidd under a low open-files limit, slow and idle
sockets from one address and from many, and a slow upload body. The owner's requests
still get answers, and the held sockets are closed on time."""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from testkit.daemon import Daemon, get_json, wait_for, write_config

FD_LIMIT = 256


def start_limited(tmp_path: Path, **web) -> Daemon:
    """`vidd serve` with RLIMIT_NOFILE at 256, as a small box or a strict unit has it."""
    path = write_config(tmp_path, web={"body_timeout_s": 2.0, **web})
    d = Daemon(path)  # started here rather than by start(): with a lower limit

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))

    with open(d.log_path, "wb") as log:
        d._proc = subprocess.Popen(
            [sys.executable, "-m", "vidd", "serve", "--config", str(path), "--verbose"],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            preexec_fn=limit,  # noqa: PLW1509 - only sets a limit, before exec
        )
    d.wait_ready()
    return d


def open_idle(port: int, source: str, n: int) -> list[socket.socket]:
    """`n` connections from `source` that send half a request head and then nothing."""
    held = []
    for _ in range(n):
        s = socket.socket()
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no blank line
        held.append(s)
    return held


def refused(s: socket.socket) -> bool:
    s.settimeout(5)
    try:
        answer = s.recv(4096)
    except (TimeoutError, ConnectionResetError):
        return False
    return answer.startswith(b"HTTP/1.1 503") and b"too_many_connections" in answer


@pytest.fixture
def daemon(tmp_path):
    d = start_limited(tmp_path)  # idle sockets stay for the default 15 s
    yield d
    d.stop()


@pytest.fixture
def impatient(tmp_path):
    d = start_limited(tmp_path, idle_timeout_s=2.0)
    yield d
    d.stop()


def test_one_address_cannot_take_every_descriptor(daemon):
    """Before: 300 idle sockets under a 256-fd limit made GET /api/status time out."""
    held = open_idle(daemon.config.web.port, "127.0.0.9", 300)
    try:
        per_client = daemon.config.web.max_connections_per_client
        turned_away = [s for s in held[per_client:] if refused(s)]
        assert len(turned_away) == 300 - per_client
        status = get_json(daemon.url + "/api/status", timeout=5)  # the owner gets in
        assert status["version"]
    finally:
        for s in held:
            s.close()
    assert "connection from 127.0.0.9 refused" in daemon.log()


def test_many_addresses_fill_only_what_the_limit_leaves(daemon):
    held = []
    try:
        for i in range(8):  # 8 addresses x 40: past the overall cap of 256 - 128
            held += open_idle(daemon.config.web.port, f"127.0.1.{i + 1}", 40)
        time.sleep(0.3)
        answers = sum(refused(s) for s in held[-40:])
        assert answers > 0  # the last ones found the house full
        assert daemon.proc.poll() is None  # no "too many open files" crash
    finally:
        for s in held:
            s.close()
    wait_for(lambda: get_json(daemon.url + "/api/status"), 10)


def test_idle_and_slow_heads_are_closed_after_the_idle_timeout(impatient):
    held = open_idle(impatient.config.web.port, "127.0.0.10", 20)
    try:
        started = time.monotonic()
        for s in held:
            s.settimeout(10)
            assert s.recv(100) == b""  # closed by vidd, without an answer
        waited = time.monotonic() - started
        assert 1.5 < waited < 8, waited  # idle_timeout_s = 2
    finally:
        for s in held:
            s.close()


def test_a_stalled_upload_body_gets_408_and_is_closed(daemon):
    s = socket.create_connection(("127.0.0.1", daemon.config.web.port))
    head = (
        "POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 10000000\r\n\r\n"
        '--x\r\nContent-Disposition: form-data; name="file"; filename="a.avi"\r\n\r\n'
    )
    s.sendall(head.encode() + b"\0" * 1000)  # then nothing more
    s.settimeout(15)
    started = time.monotonic()
    answer = b""
    while chunk := s.recv(4096):
        answer += chunk
    s.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b'"too_slow"' in answer
    assert time.monotonic() - started < 6  # body_timeout_s 2 s, then 2 s of lingering
    assert list((daemon.data / "tmp").iterdir()) == []  # the partial upload is gone
    with urllib.request.urlopen(daemon.url + "/healthz", timeout=5) as r:
        assert r.status == 200
    assert os.path.exists(daemon.data / "vidd.db")


def answer_to(port: int, raw: bytes) -> tuple[bytes, dict]:
    """Send raw bytes as a request; the status line and the JSON body of the answer."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(raw)
        s.settimeout(5)
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"\r\ncontent-type: application/json" in head.lower(), head
    return head.split(b"\r\n", 1)[0], json.loads(body)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"GARBAGE\r\n\r\n", "bad_request"),
        (b"GET /\x01 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", "bad_request"),
        (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\n", "bad_request"),
        (
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n",
            "headers_too_large",
        ),
    ],
    ids=["request line", "path", "content length", "long header"],
)
def test_a_request_aiohttp_cannot_parse_gets_the_error_shape_too(daemon, raw, code):
    """Before: `400 Bad Request` in plain text, from aiohttp, past the app's middlewares."""
    status, body = answer_to(daemon.config.web.port, raw)
    assert status.split()[1] == (b"431" if code == "headers_too_large" else b"400"), status
    assert body["error"]["code"] == code
    assert body["error"]["message"] and "\n" not in body["error"]["message"]
