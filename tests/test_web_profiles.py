"""GET /api/profiles and a retry with another profile, against the real app."""

from __future__ import annotations

import asyncio

import pytest

from testkit.jobs import make_job
from vidd.job import Status
from vidd.web.app import create_app
from vidd.web.keys import SERVICES


@pytest.fixture
async def client(aiohttp_client, make_config):
    return await aiohttp_client(create_app(make_config(watch={"enabled": False})))


async def add_failed(client):
    """A queued job whose source is missing: the pool takes it and it fails for real."""
    store = client.app[SERVICES].store
    job = await store.add(make_job())
    for _ in range(400):
        current = await store.get(job.id)
        if current is not None and current.status is Status.FAILED:
            return current
        await asyncio.sleep(0.025)
    raise AssertionError(f"the job did not fail: {current}")


async def test_profiles_in_the_config_order_with_their_descriptions(client):
    resp = await client.get("/api/profiles")
    assert resp.status == 200
    profiles = (await resp.json())["profiles"]
    assert [p["name"] for p in profiles] == ["web", "web-full-rate"]
    web, full = profiles
    assert "15 fps" in web["description"] and web["default"] and not web["repackage"]
    assert "frame rate" in full["description"] and full["repackage"] and not full["default"]


async def test_retry_with_another_profile(client):
    job = await add_failed(client)
    resp = await client.post(f"/api/jobs/{job.id}/retry", json={"profile": "web-full-rate"})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["status"] == "queued" and body["profile"] == "web-full-rate"
    stored = await client.app[SERVICES].store.get(job.id)
    assert stored is not None and stored.profile == "web-full-rate"


async def test_retry_without_a_body_keeps_the_profile(client):
    job = await add_failed(client)
    resp = await client.post(f"/api/jobs/{job.id}/retry")
    assert resp.status == 200
    assert (await resp.json())["profile"] == "web"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b'{"profile": "nope"}', 400, "unknown_profile"),
        (b'{"profile": 3}', 400, "unknown_profile"),
        (b"not json", 400, "bad_request"),
        (b'["web"]', 400, "bad_request"),
        (b'{"profile": "web", "args": ["-o", "/etc/x"]}', 400, "bad_request"),
        (b'{"profile": "' + b"x" * 2000 + b'"}', 413, "too_large"),
    ],
)
async def test_a_bad_retry_body_is_refused_and_changes_nothing(client, body, status, code):
    job = await add_failed(client)
    resp = await client.post(
        f"/api/jobs/{job.id}/retry", data=body, headers={"Content-Type": "application/json"}
    )
    assert resp.status == status
    assert (await resp.json())["error"]["code"] == code
    stored = await client.app[SERVICES].store.get(job.id)
    assert stored is not None and stored.status is Status.FAILED and stored.profile == "web"


async def test_a_retry_body_that_arrives_in_pieces_is_read_whole(client):
    """A body sent in two writes, a moment apart: the server reads it all, not just what
    had arrived (a read of the first piece alone was 'not JSON')."""
    job = await add_failed(client)

    async def pieces():
        yield b'{"profile": "web-'
        await asyncio.sleep(0.2)
        yield b'full-rate"}'

    resp = await client.post(
        f"/api/jobs/{job.id}/retry", data=pieces(), headers={"Content-Type": "application/json"}
    )
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["profile"] == "web-full-rate"
