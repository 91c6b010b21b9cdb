"""GET /videos/<id>.mp4 and .jpg for a job the real HandBrakeCLI finished: Range,
conditional GET, content types, lookups by id only, and the token."""

from __future__ import annotations

import asyncio
import io
import json

import aiohttp
import pytest

from testkit.jobs import make_job
from vidd.job import JobError, Status, new_id
from vidd.web.app import create_app
from vidd.web.keys import SERVICES

# 256 bits, as `openssl rand -hex 32` makes
TOKEN = "5f0c1a7e9b2d4c6e8a1f3b5d7c9e0a2b4d6f8a1c3e5b7d9f0a2c4e6b8d1f3a5c"


async def done_job(client, clip, headers=None) -> dict:
    form = aiohttp.FormData()
    form.add_field("file", io.BytesIO(clip.read_bytes()), filename="clip.avi")
    resp = await client.post("/api/jobs", data=form, headers=headers)
    assert resp.status == 201, await resp.text()
    job_id = (await resp.json())["id"]
    for _ in range(1200):
        body = await (await client.get(f"/api/jobs/{job_id}", headers=headers)).json()
        # done, and its poster, which follows the done record a moment later
        poster = (body.get("output") or {}).get("poster_url")
        if body["status"] not in ("queued", "running", "done") or poster:
            break
        await asyncio.sleep(0.05)
    assert body["status"] == "done", body
    return body


@pytest.fixture
async def client(aiohttp_client, make_config):
    return await aiohttp_client(create_app(make_config(watch={"enabled": False})))


async def test_ranges_and_conditional_get(client, clip):
    job = await done_job(client, clip)
    url = job["output"]["url"]
    path = client.app[SERVICES].config.storage.videos_dir / f"{job['id']}.mp4"
    data = path.read_bytes()
    size = len(data)
    assert size == job["output"]["size"] and size > 1000

    resp = await client.get(url)
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "video/mp4"
    assert resp.headers["Accept-Ranges"] == "bytes"
    assert await resp.read() == data
    etag, modified = resp.headers["ETag"], resp.headers["Last-Modified"]

    resp = await client.get(url, headers={"Range": "bytes=0-99"})
    assert resp.status == 206
    assert resp.headers["Content-Range"] == f"bytes 0-99/{size}"
    assert await resp.read() == data[:100]

    resp = await client.get(url, headers={"Range": "bytes=-500"})  # the last 500 bytes
    assert resp.status == 206
    assert resp.headers["Content-Range"] == f"bytes {size - 500}-{size - 1}/{size}"
    assert await resp.read() == data[-500:]

    resp = await client.get(url, headers={"Range": f"bytes={size // 2}-"})
    assert resp.status == 206 and await resp.read() == data[size // 2 :]

    resp = await client.get(url, headers={"Range": f"bytes={size + 10}-{size + 20}"})
    assert resp.status == 416
    assert resp.headers["Content-Range"] == f"bytes */{size}"

    resp = await client.get(url, headers={"If-None-Match": etag})
    assert resp.status == 304 and await resp.read() == b""
    resp = await client.get(url, headers={"If-Modified-Since": modified})
    assert resp.status == 304
    resp = await client.get(url, headers={"If-None-Match": '"something-else"'})
    assert resp.status == 200

    resp = await client.head(url)
    assert resp.status == 200 and int(resp.headers["Content-Length"]) == size

    resp = await client.get(url, params={"download": "1"})
    disposition = resp.headers["Content-Disposition"]
    assert disposition.startswith("attachment;") and "filename*=UTF-8''clip.mp4" in disposition

    # the poster
    poster = job["output"]["poster_url"]
    assert poster == f"/videos/{job['id']}.jpg"
    resp = await client.get(poster)
    assert resp.status == 200 and resp.headers["Content-Type"] == "image/jpeg"
    assert (await resp.read())[:2] == b"\xff\xd8"

    # by id only: unknown ids, bad ids, other extensions and paths are 404
    for bad in (
        f"/videos/{new_id()}.mp4",
        "/videos/..%2Fvidd.db",
        f"/videos/{job['id']}.db",
        f"/videos/{job['id']}.mp4.jpg",
        "/videos/vidd.db",
        "/videos/",
    ):
        resp = await client.get(bad)
        assert resp.status == 404, bad


async def raw_get(client, path: str, *headers: str, method: str = "GET"):
    """One request over a fresh socket, as bytes on the wire: (status, headers, body)."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", *headers]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    data = await asyncio.wait_for(reader.read(), 10)  # the server closes when done
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), fields, body


async def test_multi_range_is_the_whole_file_and_an_empty_suffix_is_416(client, clip):
    job = await done_job(client, clip)
    url = job["output"]["url"]
    data = (client.app[SERVICES].config.storage.videos_dir / f"{job['id']}.mp4").read_bytes()
    size = len(data)

    for ranges in ("bytes=0-1,5-9", "bytes=0-1, 5-9", "bytes=-0,0-1", "bytes=0-1,", "pages=1-2"):
        status, headers, body = await raw_get(client, url, f"Range: {ranges}")
        assert status == 200, ranges
        assert "Content-Range" not in headers and body == data
        assert headers["Content-Type"] == "video/mp4"
    status, headers, body = await raw_get(client, url, "Range: bytes=0-1,5-9", method="HEAD")
    assert status == 200 and int(headers["Content-Length"]) == size and body == b""

    for bad in ("bytes=-0", "bytes=-00", f"bytes={size}-", "bytes=9-5", "bytes=-", "bytes=x-"):
        status, headers, body = await raw_get(client, url, f"Range: {bad}")
        assert status == 416, bad
        assert headers["Content-Range"] == f"bytes */{size}"
        assert headers["Content-Type"].startswith("application/json")
        error = json.loads(body)["error"]
        assert error["code"] == "range_not_satisfiable" and error["message"]

    status, headers, body = await raw_get(client, url, "Range: bytes=5-9")
    assert status == 206 and body == data[5:10]
    assert headers["Content-Range"] == f"bytes 5-9/{size}"
    # If-Range naming an older copy: the Range is ignored, so nothing is unsatisfiable.
    stale = "If-Range: Mon, 01 Jan 2001 00:00:00 GMT"
    status, _, body = await raw_get(client, url, "Range: bytes=-0", stale)
    assert status == 200 and body == data


async def test_media_needs_the_token(aiohttp_client, make_config, clip):
    cfg = make_config(watch={"enabled": False}, web={"token": TOKEN})
    client = await aiohttp_client(create_app(cfg))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    job = await done_job(client, clip, headers=auth)
    url = job["output"]["url"]
    assert (await client.get(url)).status == 401
    assert (await client.get(job["output"]["poster_url"])).status == 401
    resp = await client.get(url, headers={**auth, "Range": "bytes=0-9"})
    assert resp.status == 206 and len(await resp.read()) == 10


async def test_a_job_that_is_not_done_has_no_files(client):
    job = make_job(
        name="n.txt",
        status=Status.REJECTED,
        source_ext=".txt",
        error=JobError("not_video", "no"),
    )
    await client.app[SERVICES].store.add(job)
    for ext in ("mp4", "jpg"):
        resp = await client.get(f"/videos/{job.id}.{ext}")
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "not_found"
