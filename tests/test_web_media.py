"""GET /videos/<id>.mp4 and .jpg for a job the real HandBrakeCLI finished: Range,
conditional GET, content types, lookups by id only, and the token."""

from __future__ import annotations

import asyncio
import io

import aiohttp
import pytest

from testkit.jobs import make_job
from vidd.daemon import SERVICES
from vidd.job import JobError, Status, new_id
from vidd.web.app import create_app


async def done_job(client, clip, headers=None) -> dict:
    form = aiohttp.FormData()
    form.add_field("file", io.BytesIO(clip.read_bytes()), filename="clip.avi")
    resp = await client.post("/api/jobs", data=form, headers=headers)
    assert resp.status == 201, await resp.text()
    job_id = (await resp.json())["id"]
    for _ in range(1200):
        body = await (await client.get(f"/api/jobs/{job_id}", headers=headers)).json()
        if body["status"] not in ("queued", "running"):
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


async def test_media_needs_the_token(aiohttp_client, make_config, clip):
    cfg = make_config(watch={"enabled": False}, web={"token": "tok"})
    client = await aiohttp_client(create_app(cfg))
    auth = {"Authorization": "Bearer tok"}
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
