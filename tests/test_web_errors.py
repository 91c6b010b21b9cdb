"""The error answers at the edges: a database that is locked, read-only or full, a full
disk, and requests aiohttp can't parse. Each is a status and the usual error body, with
one log line and no traceback."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import json
import shutil
import sqlite3
import stat
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from vidd.web.app import create_app
from vidd.web.errors import MAX_HEADER_FIELD, MAX_REQUEST_LINE, JsonErrorRunner, resource_error

ROOT = Path(__file__).resolve().parent.parent
BUSY_TIMEOUT_S = 5.0  # the store's PRAGMA busy_timeout


def form(data: bytes, name: str) -> aiohttp.FormData:
    f = aiohttp.FormData()
    f.add_field("file", io.BytesIO(data), filename=name, content_type="application/octet-stream")
    return f


def fake_handbrake(folder: Path) -> str:
    path = folder / "fake_handbrake.py"
    shutil.copy(ROOT / "tests" / "fake_handbrake.py", path)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


# -- the database and the disk -------------------------------------------------------------


async def wait_status(session: aiohttp.ClientSession, job_id: str, status: str) -> None:
    async with asyncio.timeout(60):
        while (await (await session.get(f"/api/jobs/{job_id}")).json())["status"] != status:
            await asyncio.sleep(0.05)


async def test_a_locked_database_is_503_then_works_again(daemon_factory, clip, tmp_path):
    daemon = daemon_factory(
        env={"FAKE_HB_MODE": "exitcode:4"},  # every encode fails: a job to retry
        encode={"handbrake": fake_handbrake(tmp_path), "child_env": ["FAKE_HB_MODE"]},
        watch={"enabled": False},
    )
    async with aiohttp.ClientSession(daemon.url) as session:
        resp = await session.post("/api/jobs", data=form(clip.read_bytes(), "a.avi"))
        failed = await resp.json()
        resp = await session.post("/api/jobs", data=form(b"notes\n" * 99, "b.txt"))
        assert resp.status == 422
        (rejected,) = (await (await session.get("/api/jobs?status=rejected")).json())["jobs"]
        await wait_status(session, failed["id"], "failed")

        # Another process holds the write lock longer than the store's busy timeout.
        holder = sqlite3.connect(daemon.data / "vidd.db", isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            loop = asyncio.get_running_loop()
            started = loop.time()
            retry, delete = await asyncio.gather(
                session.post(f"/api/jobs/{failed['id']}/retry"),
                session.delete(f"/api/jobs/{rejected['id']}"),
            )
            assert loop.time() - started >= BUSY_TIMEOUT_S - 0.5  # it did wait for the lock
            for resp in (retry, delete):
                assert resp.status == 503
                error = (await resp.json())["error"]
                assert error == {
                    "code": "unavailable",
                    "message": "the database is busy; try again",
                }
            # Reads go on in WAL mode while the lock is held.
            assert (await session.get(f"/api/jobs/{failed['id']}")).status == 200
        finally:
            holder.execute("ROLLBACK")
            holder.close()

        # Nothing stuck: the same requests now work.
        resp = await session.post(f"/api/jobs/{failed['id']}/retry")
        assert resp.status == 200 and (await resp.json())["status"] == "queued"
        assert (await session.delete(f"/api/jobs/{rejected['id']}")).status == 200

    log = daemon.log()
    assert "Traceback" not in log
    busy = [line for line in log.splitlines() if "503 unavailable" in line]
    assert len(busy) == 2, busy
    assert any(f"/api/jobs/{failed['id']}/retry" in line for line in busy)
    assert all("database is locked" in line and "WARNING" in line for line in busy)


def test_resource_errors_are_told_apart_from_bugs(tmp_path):
    """The real exceptions sqlite3 and the kernel raise, classified."""
    db = tmp_path / "x.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("CREATE TABLE t (x BLOB)")
        conn.commit()

    readonly = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError) as e:
        readonly.execute("INSERT INTO t VALUES (1)")
    readonly.close()
    assert "readonly" in str(e.value)
    assert resource_error(e.value)[:2] == (503, "unavailable")

    full = sqlite3.connect(db)
    full.execute("PRAGMA max_page_count = 3")
    with pytest.raises(sqlite3.OperationalError) as e:
        full.execute("INSERT INTO t VALUES (zeroblob(100000))")
    full.close()
    assert "full" in str(e.value)
    assert resource_error(e.value)[:2] == (507, "disk_full")

    locked = sqlite3.connect(db, timeout=0, isolation_level=None)
    other = sqlite3.connect(db, timeout=0, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    with pytest.raises(sqlite3.OperationalError) as e:
        locked.execute("INSERT INTO t VALUES (1)")
    other.execute("ROLLBACK")
    locked.close()
    other.close()
    assert resource_error(e.value) == (503, "unavailable", "the database is busy; try again")

    with pytest.raises(OSError) as e, open("/dev/full", "wb", buffering=0) as f:
        f.write(b"x")
    assert e.value.errno == errno.ENOSPC
    assert resource_error(e.value)[:2] == (507, "disk_full")

    with pytest.raises(sqlite3.OperationalError) as e:
        sqlite3.connect(":memory:").execute("SELECT * FROM nowhere")
    assert resource_error(e.value) is None  # a bug stays a 500 with its traceback
    assert resource_error(PermissionError(errno.EACCES, "denied")) is None


# -- what aiohttp answers before any handler runs --------------------------------------------


@contextlib.asynccontextmanager
async def serving(app: web.Application, runner_class: type[web.AppRunner] = JsonErrorRunner):
    """The app behind a real socket, started as the daemon starts it."""
    runner = runner_class(app, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield runner.addresses[0][:2]
    finally:
        await runner.cleanup()


async def exchange(address, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes; read the answer up to the server's close."""
    reader, writer = await asyncio.open_connection(*address)
    writer.write(data)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines)}
    return int(status_line.split()[1]), headers, body


UPLOAD_PART = (
    b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.avi"\r\n\r\n'
    + b"x" * 100
    + b"\r\n--b--\r\n"
)


def short_upload(*extra: bytes) -> bytes:
    """A POST whose Content-Length is shorter than the body that follows it."""
    return (
        b"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + b"".join(extra)
        + b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 50\r\n\r\n"
        + UPLOAD_PART
    )


BAD_REQUESTS = {
    "long-url": (
        b"GET /api/status?x=" + b"a" * MAX_REQUEST_LINE + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        414,
        "uri_too_long",
        "URL is longer",
    ),
    "long-header": (
        b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Long: "
        + b"a" * (MAX_HEADER_FIELD + 100)
        + b"\r\n\r\n",
        431,
        "headers_too_large",
        "header is over",
    ),
    "many-headers": (
        b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + b"".join(b"X-%d: 1\r\n" % i for i in range(200))
        + b"\r\n",
        431,
        "headers_too_large",
        "more than 128",
    ),
    "garbage": (b"HELLO THERE\r\n\r\n", 400, "bad_request", "not an HTTP request"),
    "tls": (bytes.fromhex("16030100c4010000c00303") + bytes(200), 400, "bad_request", "TLS"),
    "short-content-length": (short_upload(), 400, "bad_request", "Content-Length"),
    "short-content-length-close": (
        short_upload(b"Connection: close\r\n"),
        400,
        "bad_request",
        "longer than its Content-Length",
    ),
}


@pytest.mark.parametrize(
    ("data", "status", "code", "words"), BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys()
)
async def test_unparsable_requests_are_json_errors_with_one_line(
    make_config, caplog, data, status, code, words
):
    caplog.set_level("DEBUG")
    async with serving(create_app(make_config(watch={"enabled": False}))) as address:
        caplog.clear()
        got, headers, body = await exchange(address, data)
        assert got == status
        assert headers["content-type"].startswith("application/json")
        error = json.loads(body)["error"]
        assert error["code"] == code and words in error["message"], error
        # The server still answers normally.
        async with aiohttp.ClientSession() as session:
            resp = await session.get(f"http://{address[0]}:{address[1]}/healthz")
            assert resp.status == 200
    said = [r for r in caplog.records if r.name == "vidd.web.errors"]
    assert len(said) == 1 and said[0].levelname == "INFO"
    assert str(status) in said[0].getMessage() and "\n" not in said[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info or r.levelname in ("ERROR", "CRITICAL")]
    assert not [r for r in caplog.records if r.name == "aiohttp.server"]


async def test_a_plain_app_runner_answers_these_in_text(make_config, caplog):
    """What the daemon answers until it serves through JsonErrorRunner."""
    app = create_app(make_config(watch={"enabled": False}))
    async with serving(app, web.AppRunner) as address:
        data = BAD_REQUESTS["long-url"][0]
        status, headers, _ = await exchange(address, data)
    assert status == 400 and headers["content-type"].startswith("text/plain")
    assert [r for r in caplog.records if r.name == "aiohttp.server" and r.exc_info]
