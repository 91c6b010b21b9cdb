"""POST /api/jobs: streamed uploads, their limits, and what is left behind when they fail
(nothing: no partial file in tmp/, no job)."""

from __future__ import annotations

import asyncio
import io
import json
import secrets
import shutil
from pathlib import Path

import aiohttp
import pytest

from testkit.tmpfs import tiny_disk
from vidd import disk
from vidd.web.app import create_app
from vidd.web.keys import COUNTERS, SERVICES


@pytest.fixture
async def client(aiohttp_client, make_config):
    cfg = make_config(watch={"enabled": False}, web={"max_upload_bytes": 1 << 20})
    return await aiohttp_client(create_app(cfg))


def form(data: bytes, name: str, **fields: str) -> aiohttp.FormData:
    f = aiohttp.FormData()
    for k, v in fields.items():
        f.add_field(k, v)
    f.add_field("file", io.BytesIO(data), filename=name, content_type="application/octet-stream")
    return f


def leftovers(client) -> list[Path]:
    return sorted(client.app[SERVICES].config.storage.tmp_dir.glob("upload-*"))


async def job_count(client) -> int:
    return sum((await client.app[SERVICES].store.counts()).values())


def assert_error(body: dict, code: str) -> None:
    assert body["error"]["code"] == code and body["error"]["message"]


async def test_upload_converts_to_done(client, clip):
    resp = await client.post("/api/jobs", data=form(clip.read_bytes(), "holiday.avi"))
    assert resp.status == 201
    job = await resp.json()
    assert job["status"] == "queued" and job["name"] == "holiday.avi" and job["profile"] == "web"
    assert job["source"]["duration"] == pytest.approx(2.0, abs=0.2)
    cfg = client.app[SERVICES].config
    assert (cfg.storage.sources_dir / f"{job['id']}.avi").exists()
    assert leftovers(client) == []
    assert client.app[COUNTERS].bytes_uploaded == clip.stat().st_size
    for _ in range(600):
        body = await (await client.get(f"/api/jobs/{job['id']}")).json()
        if body["status"] not in ("queued", "running"):
            break
        await asyncio.sleep(0.05)
    assert body["status"] == "done", body
    assert body["progress"] == 1
    assert body["output"]["url"] == f"/videos/{job['id']}.mp4"
    resp = await client.get(body["output"]["url"])
    assert resp.status == 200 and resp.headers["Content-Type"] == "video/mp4"
    assert len(await resp.read()) == body["output"]["size"]


async def test_profile_field(client, clip):
    resp = await client.post("/api/jobs", data=form(clip.read_bytes(), "a.avi", profile="web"))
    assert resp.status == 201 and (await resp.json())["profile"] == "web"


async def test_unknown_profile_is_400(client, clip):
    resp = await client.post("/api/jobs", data=form(clip.read_bytes(), "a.avi", profile="nope"))
    assert resp.status == 400
    body = await resp.json()
    assert_error(body, "unknown_profile")
    assert "web" in body["error"]["message"]
    assert leftovers(client) == [] and await job_count(client) == 0


async def test_text_file_is_422_with_the_reason(client, tmp_path):
    notes = b"Shopping list\n" * 200
    resp = await client.post("/api/jobs", data=form(notes, "notes.txt"))
    assert resp.status == 422
    body = await resp.json()
    assert_error(body, "not_video")
    assert leftovers(client) == []
    cfg = client.app[SERVICES].config
    assert list(cfg.storage.sources_dir.iterdir()) == []  # the upload is deleted


async def test_over_the_limit_is_413_and_leaves_nothing(client):
    big = secrets.token_bytes(3 << 20)
    resp = await client.post("/api/jobs", data=form(big, "big.avi"))
    assert resp.status == 413
    assert_error(await resp.json(), "too_large")
    assert leftovers(client) == [] and await job_count(client) == 0
    # the server wrote no more than the limit before it stopped
    assert client.app[COUNTERS].bytes_uploaded <= 1 << 20


async def test_declared_size_over_the_limit_is_refused_before_the_body(client):
    """With Expect: 100-continue, the client learns 413 before it sends a byte."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(
        b"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\n"
        + f"Content-Length: {10 << 30}\r\n\r\n".encode()
    )
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), 5)
    assert status.startswith(b"HTTP/1.1 413")
    writer.close()
    await writer.wait_closed()
    assert client.app[COUNTERS].bytes_uploaded == 0


async def test_disk_guard_is_507(aiohttp_client, make_config, clip):
    cfg = make_config(watch={"enabled": False}, storage={"min_free_bytes": 1 << 60})
    client = await aiohttp_client(create_app(cfg))
    resp = await client.post("/api/jobs", data=form(clip.read_bytes(), "a.avi"))
    assert resp.status == 507
    assert_error(await resp.json(), "disk_full")
    assert leftovers(client) == [] and await job_count(client) == 0


async def test_client_that_aborts_mid_upload_leaves_nothing(client):
    """A raw socket sends the headers and part of the body, then hangs up."""
    boundary = "xyz"
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="half.avi"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    total = len(head) + 900_000 + 64
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(
        b"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + f"Content-Type: multipart/form-data; boundary={boundary}\r\n".encode()
        + f"Content-Length: {total}\r\n\r\n".encode()
        + head
        + secrets.token_bytes(300_000)
    )
    await writer.drain()
    counters = client.app[COUNTERS]
    for _ in range(200):  # the server has started writing the file
        if leftovers(client) and counters.uploads_active:
            break
        await asyncio.sleep(0.01)
    assert leftovers(client), "the upload never reached tmp/"
    writer.transport.abort()
    await writer.wait_closed()
    for _ in range(300):
        if not leftovers(client) and counters.uploads_active == 0:
            break
        await asyncio.sleep(0.01)
    assert leftovers(client) == []
    assert await job_count(client) == 0


async def test_bad_forms_are_400(client, clip):
    resp = await client.post("/api/jobs", data=b"hello", headers={"Content-Type": "text/plain"})
    assert resp.status == 400
    assert_error(await resp.json(), "bad_request")
    f = aiohttp.FormData()
    f.add_field("other", "x")
    f.add_field("more", "y")
    resp = await client.post("/api/jobs", data=f)
    assert resp.status == 400
    assert "file" in (await resp.json())["error"]["message"]
    f = aiohttp.FormData()
    for i in range(20):
        f.add_field(f"f{i}", "x")
    resp = await client.post("/api/jobs", data=f)
    assert resp.status == 400
    f = aiohttp.FormData()
    f.add_field("profile", "w" * 10_000)
    resp = await client.post("/api/jobs", data=f)
    assert resp.status == 400
    assert leftovers(client) == [] and await job_count(client) == 0


async def test_long_and_odd_names_are_capped_for_display(client, clip):
    name = "a/b\\" + "\u202e" + "x" * 600 + ".avi"
    resp = await client.post("/api/jobs", data=form(clip.read_bytes(), name))
    assert resp.status == 201
    job = await resp.json()
    assert job["name"].endswith(".avi") and len(job["name"]) <= 200
    assert "/" not in job["name"] and "\u202e" not in job["name"]


async def test_a_missing_handbrake_is_503_and_nothing_stays_behind(daemon_factory, clip, tmp_path):
    """HandBrakeCLI removed after the start: an upload is refused in words, not lost in tmp/."""
    handbrake = tmp_path / "tools" / "HandBrakeCLI"
    handbrake.parent.mkdir()
    shutil.copy2("/usr/bin/HandBrakeCLI", handbrake)
    daemon = daemon_factory(encode={"handbrake": str(handbrake)}, watch={"enabled": False})
    handbrake.unlink()
    storage = daemon.config.storage
    async with aiohttp.ClientSession(daemon.url) as session:
        resp = await session.post("/api/jobs", data=form(clip.read_bytes(), "a.avi"))
        assert resp.status == 503
        error = (await resp.json())["error"]
        assert error["code"] == "handbrake_missing"
        assert str(handbrake) in error["message"] and "it is not there" in error["message"]
        assert (await (await session.get("/api/jobs")).json())["jobs"] == []
        assert list(storage.tmp_dir.iterdir()) == []
        assert list(storage.sources_dir.iterdir()) == list(storage.rejected_dir.iterdir()) == []
        log = daemon.log()
        assert "Traceback" not in log
        (line,) = [line for line in log.splitlines() if str(handbrake) in line]
        assert "upload of 'a.avi' refused" in line and "it is not there" in line
        # Back in place: uploads work again.
        shutil.copy2("/usr/bin/HandBrakeCLI", handbrake)
        resp = await session.post("/api/jobs", data=form(clip.read_bytes(), "a.avi"))
        assert resp.status == 201, await resp.text()


def multipart(*parts: tuple[str, str | None, bytes], boundary: str = "b") -> bytes:
    """A multipart/form-data body from (field, file name or None, content) parts."""
    out = b""
    for field, filename, content in parts:
        disposition = f'form-data; name="{field}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        out += content + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


async def post_raw(client, content_type: str, body: bytes):
    """POST /api/jobs as bytes on the wire, with a Content-Length of exactly len(body)."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(
        b"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        + f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    await writer.wait_closed()
    head, _, payload = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


CLIP_BYTES = 300_000  # stands in for a video: these forms never get as far as the probe
FORM = "multipart/form-data; boundary=b"
WHOLE = multipart(("file", "a.avi", b"v" * CLIP_BYTES))
MALFORMED = {
    "garbage": (FORM, b"garbage, not a form" * 10, "not a valid multipart form"),
    "no-parts": (FORM, b"", "not a valid multipart form"),
    "no-boundary": ("multipart/form-data", WHOLE, "boundary"),
    "cut-in-the-file": (FORM, WHOLE[:1000], "ended before"),
    "cut-in-part-headers": (FORM, WHOLE[:50], "ended before"),
    "no-closing-boundary": (FORM, WHOLE[: -len(b"--b--\r\n")], "ended before"),
    "two-files": (
        FORM,
        multipart(("file", "a.avi", b"v" * CLIP_BYTES), ("file", "b.avi", b"w" * CLIP_BYTES)),
        "one file per upload",
    ),
    "two-small-files": (
        FORM,
        multipart(("file", "a.avi", b"v" * 10), ("file", "b.avi", b"w" * 10)),
        "one file per upload",
    ),
    "bad-disposition": (
        FORM,
        b'--b\r\nContent-Disposition: form-data; name="file"; ;filename\r\n\r\nx\r\n--b--\r\n',
        "malformed Content-Disposition",
    ),
}


@pytest.mark.parametrize(
    ("content_type", "body", "words"), MALFORMED.values(), ids=MALFORMED.keys()
)
async def test_malformed_forms_are_400_with_one_line(client, caplog, content_type, body, words):
    caplog.set_level("DEBUG")
    status, answer = await post_raw(client, content_type, body)
    assert status == 400
    assert answer["error"]["code"] == "bad_request" and words in answer["error"]["message"]
    said = [r for r in caplog.records if r.name.startswith("vidd")]
    assert [r.levelname for r in said] == ["INFO"], [r.getMessage() for r in said]
    assert "refused (400 bad_request)" in said[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info or r.levelname == "ERROR"]
    assert leftovers(client) == [] and await job_count(client) == 0


async def test_a_disk_that_fills_up_mid_upload_is_507_and_leaves_nothing(client, caplog):
    """The disk guard passes (no Content-Length to judge by), then the writes meet ENOSPC."""
    tmp_dir = client.app[SERVICES].config.storage.tmp_dir
    body = multipart(("file", "big.avi", secrets.token_bytes(900_000)))

    async def chunks():
        for i in range(0, len(body), 64 << 10):
            yield body[i : i + (64 << 10)]

    with tiny_disk(tmp_dir, "256k"):
        resp = await client.post(
            "/api/jobs", data=chunks(), headers={"Content-Type": "multipart/form-data; boundary=b"}
        )
        assert resp.status == 507
        error = (await resp.json())["error"]
        assert error["code"] == "disk_full" and "disk filled up" in error["message"]
        assert leftovers(client) == []  # the partial file is gone
        assert disk.free_bytes(tmp_dir) > 200_000
    assert await job_count(client) == 0
    said = [r for r in caplog.records if r.name.startswith("vidd")]
    assert [r.levelname for r in said] == ["WARNING"], [r.getMessage() for r in said]
    assert "507 disk_full" in said[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info]
    # With room again, the next upload goes through to the probe.
    resp = await client.post("/api/jobs", data=form(b"notes\n" * 100, "notes.txt"))
    assert resp.status == 422
