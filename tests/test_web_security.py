"""The Host check against DNS rebinding, and the upload's early refusal (Expect:
100-continue) applying the same guards as every other request."""

from __future__ import annotations

import asyncio

import pytest

from vidd.web.app import create_app

# 256 bits, as `openssl rand -hex 32` makes
TOKEN = "5f0c1a7e9b2d4c6e8a1f3b5d7c9e0a2b4d6f8a1c3e5b7d9f0a2c4e6b8d1f3a5c"


@pytest.fixture
async def client(aiohttp_client, make_config):
    cfg = make_config(watch={"enabled": False}, web={"allowed_hosts": ["videos.example.org"]})
    return await aiohttp_client(create_app(cfg))


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1:8080",
        "localhost:8080",
        "localhost",
        "[::1]:8080",
        "192.168.1.20",
        "videos.example.org",
        "VIDEOS.example.org:443",
    ],
)
async def test_known_hosts_and_ip_literals_are_served(client, host: str) -> None:
    r = await client.get("/api/status", headers={"Host": host})
    assert r.status == 200, await r.text()


@pytest.mark.parametrize("host", ["attacker.example:8080", "rebind.evil.test", "localhost.evil"])
async def test_a_foreign_host_name_is_refused(client, host: str) -> None:
    for method, path in [("GET", "/api/jobs"), ("GET", "/"), ("POST", "/api/jobs")]:
        r = await client.request(method, path, headers={"Host": host, "Origin": f"http://{host}"})
        assert r.status == 403
        assert (await r.json())["error"]["code"] == "unknown_host"


async def raw_expect_upload(client, headers: dict[str, str]) -> bytes:
    """Send only the headers of a 1 GB upload that waits for 100-continue; return the answer."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    lines = [
        "POST /api/jobs HTTP/1.1",
        f"Host: 127.0.0.1:{client.port}",
        "Content-Type: multipart/form-data; boundary=x",
        "Content-Length: 1000000000",
        "Expect: 100-continue",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(400), 10)
    finally:
        writer.close()
        await writer.wait_closed()


async def test_a_foreign_origin_is_refused_before_the_body_is_sent(client) -> None:
    answer = await raw_expect_upload(client, {"Origin": "http://attacker.example"})
    assert answer.startswith(b"HTTP/1.1 403"), answer
    assert b"100 Continue" not in answer


async def test_a_missing_token_is_refused_before_the_body_is_sent(aiohttp_client, make_config):
    cfg = make_config(watch={"enabled": False}, web={"token": TOKEN})
    client = await aiohttp_client(create_app(cfg))
    answer = await raw_expect_upload(client, {})
    assert answer.startswith(b"HTTP/1.1 401"), answer
    assert b"100 Continue" not in answer
