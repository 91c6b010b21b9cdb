"""The tus 1.0 protocol at /api/uploads, spoken with aiohttp's client: creation, PATCHes,
offsets that survive a body cut off, checksums, takeover, termination, expiry, and the
same limits and checks as every other route."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
from pathlib import Path

import pytest

from testkit.tmpfs import tiny_disk
from vidd import disk
from vidd.web.app import create_app
from vidd.web.keys import SERVICES

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {**TUS, "Content-Type": "application/offset+octet-stream"}


def meta(**pairs: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in pairs.items())


@pytest.fixture
async def client(aiohttp_client, make_config):
    cfg = make_config(
        watch={"enabled": False},
        web={"max_upload_bytes": 64 << 20, "max_open_uploads": 3},
    )
    return await aiohttp_client(create_app(cfg))


def partials(client) -> list[Path]:
    return sorted(client.app[SERVICES].layout.uploads.iterdir())


async def create(client, length: int, **metadata: str) -> str:
    headers = {**TUS, "Upload-Length": str(length)}
    if metadata:
        headers["Upload-Metadata"] = meta(**metadata)
    resp = await client.post("/api/uploads", headers=headers)
    assert resp.status == 201, await resp.text()
    assert resp.headers["Tus-Resumable"] == "1.0.0"
    assert resp.headers["Upload-Expires"].endswith("GMT")
    location = resp.headers["Location"]
    assert location.startswith("/api/uploads/")
    return location


async def offset_of(client, url: str) -> int:
    resp = await client.head(url, headers=TUS)
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "no-store"
    return int(resp.headers["Upload-Offset"])


async def send(client, url: str, offset: int, data: bytes, **headers: str):
    body = io.BytesIO(data) if isinstance(data, bytes) else data
    return await client.patch(
        url, data=body, headers={**OCTETS, "Upload-Offset": str(offset), **headers}
    )


def error_code(body: dict) -> str:
    assert set(body) == {"error"} and body["error"]["message"]
    return body["error"]["code"]


async def test_options_says_what_is_supported(client):
    resp = await client.options("/api/uploads")
    assert resp.status == 204
    assert resp.headers["Tus-Version"] == "1.0.0"
    extensions = set(resp.headers["Tus-Extension"].split(","))
    assert {
        "creation",
        "creation-with-upload",
        "termination",
        "expiration",
        "checksum",
    } <= extensions
    assert set(resp.headers["Tus-Checksum-Algorithm"].split(",")) == {"sha1", "sha256", "md5"}
    assert int(resp.headers["Tus-Max-Size"]) == 64 << 20


async def test_an_upload_in_three_patches_becomes_a_job(client, clip):
    data = clip.read_bytes()
    url = await create(client, len(data), filename="../../etc/holiday.avi", profile="web")
    assert await offset_of(client, url) == 0
    third = len(data) // 3 + 1
    offset = 0
    while offset < len(data):
        resp = await send(client, url, offset, data[offset : offset + third])
        assert resp.status == 204, await resp.text()
        offset = int(resp.headers["Upload-Offset"])
    job_id = resp.headers["Vidd-Job-Id"]
    assert resp.headers["Vidd-Job-Status"] == "queued"
    job = await (await client.get(f"/api/jobs/{job_id}")).json()
    assert job["name"] == "holiday.avi" and job["origin"] == "upload"  # never a path
    source = client.app[SERVICES].layout.sources / f"{job_id}.avi"
    assert hashlib.sha256(source.read_bytes()).digest() == hashlib.sha256(data).digest()
    state = await (await client.get(url)).json()
    assert state["job_id"] == job_id and state["offset"] == state["length"] == len(data)
    assert state["job_status"] in ("queued", "running", "done")
    assert partials(client) == []  # the file moved into sources/
    # A PATCH after the end is told the upload is complete.
    resp = await send(client, url, 0, b"x")
    assert resp.status == 409 and resp.headers["Upload-Offset"] == str(len(data))
    # A client whose final answer was lost asks again at the end: the same job.
    resp = await send(client, url, len(data), b"")
    assert resp.status == 204 and resp.headers["Vidd-Job-Id"] == job_id


async def test_creation_with_upload(client, clip):
    data = clip.read_bytes()
    resp = await client.post(
        "/api/uploads",
        data=data,
        headers={
            **OCTETS,
            "Upload-Length": str(len(data)),
            "Upload-Metadata": meta(filename="c.avi"),
        },
    )
    assert resp.status == 201, await resp.text()
    assert resp.headers["Upload-Offset"] == str(len(data))
    assert resp.headers["Vidd-Job-Status"] == "queued"


async def test_a_file_that_is_not_a_video_is_a_rejected_job(client):
    data = b"just some notes\n" * 64
    url = await create(client, len(data), filename="notes.txt")
    resp = await send(client, url, 0, data)
    assert resp.status == 204
    assert resp.headers["Vidd-Job-Status"] == "rejected"
    job = await (await client.get(f"/api/jobs/{resp.headers['Vidd-Job-Id']}")).json()
    assert job["status"] == "rejected" and job["error"]["message"]


async def test_wrong_tus_version_is_412(client):
    resp = await client.post(
        "/api/uploads", headers={"Tus-Resumable": "0.2.2", "Upload-Length": "5"}
    )
    assert resp.status == 412 and resp.headers["Tus-Version"] == "1.0.0"
    assert error_code(await resp.json()) == "unsupported_version"
    resp = await client.post("/api/uploads", headers={"Upload-Length": "5"})
    assert resp.status == 412
    url = await create(client, 5)
    resp = await client.patch(
        url, data=b"hello", headers={"Content-Type": OCTETS["Content-Type"], "Upload-Offset": "0"}
    )
    assert resp.status == 412
    assert await offset_of(client, url) == 0


@pytest.mark.parametrize(
    "headers",
    [
        {},  # no Upload-Length
        {"Upload-Length": "-1"},
        {"Upload-Length": "ten"},
        {"Upload-Defer-Length": "1"},
        {"Upload-Length": "5", "Upload-Metadata": "filename not*base64"},
        {"Upload-Length": "5", "Upload-Metadata": meta(profile="nope")},
    ],
)
async def test_bad_creation_is_400_and_stores_nothing(client, headers):
    resp = await client.post("/api/uploads", headers={**TUS, **headers})
    assert resp.status == 400
    code = error_code(await resp.json())
    assert code == (
        "unknown_profile"
        if "Upload-Metadata" in headers and "*" not in headers["Upload-Metadata"]
        else "bad_request"
    )
    assert partials(client) == []
    assert await client.app[SERVICES].store.uploads() == []


async def test_over_the_limit_is_413_at_creation(client):
    resp = await client.post("/api/uploads", headers={**TUS, "Upload-Length": str((64 << 20) + 1)})
    assert resp.status == 413
    assert error_code(await resp.json()) == "too_large"
    assert partials(client) == []


async def test_wrong_offset_is_409(client):
    url = await create(client, 10)
    assert (await send(client, url, 0, b"12345")).status == 204
    resp = await send(client, url, 3, b"45678")
    assert resp.status == 409 and resp.headers["Upload-Offset"] == "5"
    assert error_code(await resp.json()) == "offset_mismatch"
    assert await offset_of(client, url) == 5


async def test_wrong_content_type_is_415(client):
    url = await create(client, 5)
    resp = await client.patch(
        url, data=b"hello", headers={**TUS, "Upload-Offset": "0", "Content-Type": "text/plain"}
    )
    assert resp.status == 415
    assert error_code(await resp.json()) == "unsupported_media_type"
    assert await offset_of(client, url) == 0


async def test_a_body_past_the_length_is_400(client):
    url = await create(client, 4)
    resp = await send(client, url, 0, b"hello")
    assert resp.status == 400
    assert await offset_of(client, url) == 0


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "md5"])
async def test_checksum_mismatch_is_460_and_keeps_the_previous_offset(client, algorithm):
    url = await create(client, 10)
    good = base64.b64encode(hashlib.new(algorithm, b"12345").digest()).decode()
    resp = await send(client, url, 0, b"12345", **{"Upload-Checksum": f"{algorithm} {good}"})
    assert resp.status == 204
    wrong = base64.b64encode(hashlib.new(algorithm, b"nope!").digest()).decode()
    resp = await send(client, url, 5, b"67890", **{"Upload-Checksum": f"{algorithm} {wrong}"})
    assert resp.status == 460
    assert error_code(await resp.json()) == "checksum_mismatch"
    assert await offset_of(client, url) == 5
    (part,) = partials(client)
    assert part.read_bytes() == b"12345"  # truncated back


async def test_an_unknown_checksum_algorithm_is_400(client):
    url = await create(client, 5)
    resp = await send(client, url, 0, b"hello", **{"Upload-Checksum": "crc32 AAAAAA=="})
    assert resp.status == 400 and error_code(await resp.json()) == "bad_checksum"


async def test_delete_then_404(client):
    url = await create(client, 10)
    assert (await send(client, url, 0, b"12345")).status == 204
    resp = await client.delete(url, headers=TUS)
    assert resp.status == 204 and resp.headers["Tus-Resumable"] == "1.0.0"
    assert partials(client) == []
    assert (await client.head(url, headers=TUS)).status == 404
    resp = await send(client, url, 5, b"67890")
    assert resp.status == 404 and error_code(await resp.json()) == "not_found"
    assert (await client.delete(url, headers=TUS)).status == 404


async def test_expiry_rolls_from_the_last_patch_then_404(client):
    uploads = client.app[SERVICES].uploads
    now = [1_000_000.0]
    uploads.clock = lambda: now[0]
    expiry = client.app[SERVICES].config.web.upload_expiry_s
    url = await create(client, 10)
    now[0] += expiry - 10
    assert (await send(client, url, 0, b"12345")).status == 204  # rolls the expiry on
    now[0] += expiry - 10
    resp = await client.head(url, headers=TUS)
    assert resp.status == 200
    assert await uploads.sweep() == 0
    now[0] += 20
    assert await uploads.sweep() == 1
    assert partials(client) == []
    assert (await client.head(url, headers=TUS)).status == 404
    assert (await send(client, url, 5, b"67890")).status == 404
    # Without the sweeper, HEAD and PATCH see the expiry themselves.
    url = await create(client, 10)
    now[0] += expiry + 1
    assert (await client.head(url, headers=TUS)).status == 404
    assert partials(client) == []


async def test_a_body_cut_off_keeps_every_byte_that_arrived(client):
    url = await create(client, 3 << 20)
    reader, writer = await asyncio.open_connection(client.host, client.port)
    head = (
        f"PATCH {url} HTTP/1.1\r\nHost: {client.host}:{client.port}\r\n"
        "Tus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n"
        f"Upload-Offset: 0\r\nContent-Length: {3 << 20}\r\n\r\n"
    )
    writer.write(head.encode() + b"a" * (1 << 20) + b"b" * 12345)
    await writer.drain()
    await asyncio.sleep(0.3)
    writer.close()
    for _ in range(100):
        if await offset_of(client, url) > 0:
            break
        await asyncio.sleep(0.05)
    assert await offset_of(client, url) == (1 << 20) + 12345
    (part,) = partials(client)
    assert part.stat().st_size == (1 << 20) + 12345
    # ... and the client resumes from there.
    rest = b"c" * ((3 << 20) - (1 << 20) - 12345)
    resp = await send(client, url, (1 << 20) + 12345, rest)
    assert resp.status == 204 and resp.headers["Upload-Offset"] == str(3 << 20)


async def test_a_new_patch_takes_over_from_a_half_open_one(client):
    data = os.urandom(2 << 20)
    url = await create(client, len(data))
    stalled = asyncio.Event()

    async def half_then_stall():
        yield data[: 1 << 20]
        stalled.set()
        await asyncio.Event().wait()  # the connection stays open, sending nothing

    old = asyncio.create_task(send(client, url, 0, half_then_stall()))
    await stalled.wait()
    await asyncio.sleep(0.2)
    # The client gave up on that connection: it asks where to resume, then sends.
    offset = await offset_of(client, url)
    resp = await send(client, url, offset, data[offset:])
    assert resp.status == 204, await resp.text()  # not 423, not a wait
    assert resp.headers["Vidd-Job-Status"] == "rejected"  # random bytes: not a video
    old.cancel()
    await asyncio.gather(old, return_exceptions=True)


async def test_open_uploads_are_capped_429(client):
    for _ in range(3):
        await create(client, 10)
    resp = await client.post("/api/uploads", headers={**TUS, "Upload-Length": "10"})
    assert resp.status == 429 and resp.headers["Retry-After"]
    assert error_code(await resp.json()) == "too_many_uploads"


async def test_the_declared_length_is_reserved_507(aiohttp_client, make_config, tmp_path):
    # A disk of its own: the shared disk's free space moves with every other writer.
    with tiny_disk(tmp_path / "disk", "160m") as data:
        free = disk.free_bytes(data)
        cfg = make_config(
            watch={"enabled": False},
            storage={"data_dir": str(data / "var"), "min_free_bytes": max(0, free - (64 << 20))},
            web={"max_upload_bytes": 1 << 30},
        )
        client = await aiohttp_client(create_app(cfg))
        guard = client.app[SERVICES].disk
        url = await create(client, 32 << 20)
        assert guard.reserved == 32 << 20
        resp = await client.post("/api/uploads", headers={**TUS, "Upload-Length": str(48 << 20)})
        assert resp.status == 507 and error_code(await resp.json()) == "disk_full"
        await client.delete(url, headers=TUS)
        assert guard.reserved == 0
        await client.close()


async def test_the_token_and_the_origin_are_checked(aiohttp_client, make_config):
    token = "3c9e1f5a7b2d4e6f8a0c1e3b5d7f9a2c4e6b8d0f1a3c5e7b9d2f4a6c8e0b1d3f"
    cfg = make_config(watch={"enabled": False}, web={"token": token})
    client = await aiohttp_client(create_app(cfg))
    resp = await client.post("/api/uploads", headers={**TUS, "Upload-Length": "5"})
    assert resp.status == 401 and error_code(await resp.json()) == "unauthorized"
    bearer = {"Authorization": f"Bearer {token}"}
    resp = await client.post(
        "/api/uploads",
        headers={**TUS, **bearer, "Upload-Length": "5", "Origin": "http://evil.example"},
    )
    assert resp.status == 403
    url = await create_with(client, bearer)
    assert (await client.head(url, headers=TUS)).status == 401
    assert (await client.head(url, headers={**TUS, **bearer})).status == 200


async def create_with(client, headers: dict[str, str]) -> str:
    resp = await client.post("/api/uploads", headers={**TUS, **headers, "Upload-Length": "5"})
    assert resp.status == 201
    return resp.headers["Location"]


async def test_uploads_survive_a_restart_of_the_services(aiohttp_client, make_config):
    cfg = make_config(watch={"enabled": False})
    client = await aiohttp_client(create_app(cfg))
    url = await create(client, 10)
    assert (await send(client, url, 0, b"12345")).status == 204
    await client.close()
    # tmp/ is cleared at start; uploads/ is not.
    client = await aiohttp_client(create_app(cfg))
    assert await offset_of(client, url) == 5
    assert client.app[SERVICES].disk.reserved == 5
    resp = await send(client, url, 5, b"67890")
    assert resp.status == 204 and resp.headers["Vidd-Job-Status"] == "rejected"


async def test_the_page_gets_tus_js_client_and_its_licence(client):
    index = await (await client.get("/")).text()
    assert index.index("/static/tus.min.js") < index.index("/static/uploads.js")
    resp = await client.get("/static/tus.min.js")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/javascript")
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    assert "tus" in await resp.text()
    resp = await client.get("/static/tus.LICENSE")
    assert resp.status == 200 and "MIT License" in await resp.text()
