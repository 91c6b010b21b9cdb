"""GET /ws over real sockets: the snapshot, job and deleted events, the Origin check, the
client limit, a client that never reads, and the 1001 close at shutdown."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time

import aiohttp
import pytest

from testkit.jobs import add_rejected, make_job
from vidd.job import Status, new_id
from vidd.web.app import create_app
from vidd.web.keys import HUB, SERVICES


@pytest.fixture
async def client(aiohttp_client, make_config):
    cfg = make_config(watch={"enabled": False}, web={"max_ws_clients": 3})
    return await aiohttp_client(create_app(cfg))


async def test_snapshot_then_job_and_deleted_events(client):
    old = [await add_rejected(client, f"old{i}.txt") for i in range(3)]
    ws = await client.ws_connect("/ws")
    snap = await ws.receive_json(timeout=5)
    assert snap["type"] == "snapshot"
    assert [j["id"] for j in snap["jobs"]] == [j.id for j in reversed(old)]
    assert snap["jobs"][0]["name"] == "old2.txt"

    new = await add_rejected(client, "new.txt")
    msg = await ws.receive_json(timeout=5)
    assert msg == {"type": "job", "job": new.to_json()}
    resp = await client.delete(f"/api/jobs/{new.id}")
    assert resp.status == 200
    assert await ws.receive_json(timeout=5) == {"type": "deleted", "id": new.id}
    await ws.close()


async def test_snapshot_holds_the_newest_200(client):
    store = client.app[SERVICES].store
    jobs = [
        make_job(name=f"n{i}", status=Status.REJECTED, origin="inbox", source_ext="")
        for i in range(230)
    ]
    await store.add_many(jobs)
    ws = await client.ws_connect("/ws")
    snap = await ws.receive_json(timeout=5)
    assert len(snap["jobs"]) == 200
    assert snap["jobs"][0]["id"] == jobs[-1].id
    await ws.close()


async def test_foreign_origin_handshake_is_refused(client):
    with pytest.raises(aiohttp.WSServerHandshakeError) as e:
        await client.ws_connect("/ws", headers={"Origin": "http://evil.example"})
    assert e.value.status == 403
    origin = f"http://{client.server.host}:{client.server.port}"
    ws = await client.ws_connect("/ws", headers={"Origin": origin})
    assert (await ws.receive_json(timeout=5))["type"] == "snapshot"
    await ws.close()


async def test_client_limit(client):
    open_ = [await client.ws_connect("/ws") for _ in range(3)]
    with pytest.raises(aiohttp.WSServerHandshakeError) as e:
        await client.ws_connect("/ws")
    assert e.value.status == 503
    await open_[0].close()
    for _ in range(100):
        if len(client.app[HUB].clients) < 3:
            break
        await asyncio.sleep(0.01)
    ws = await client.ws_connect("/ws")
    await ws.close()
    for ws in open_[1:]:
        await ws.close()


async def raw_websocket(host: str, port: int) -> socket.socket:
    """A handshake by hand on a socket with a tiny receive buffer, that then never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (host, port))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await loop.sock_sendall(sock, request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += await loop.sock_recv(sock, 1)
    assert head.startswith(b"HTTP/1.1 101")
    return sock


async def test_a_client_that_never_reads_does_not_delay_the_others(client):
    hub = client.app[HUB]
    stuck = await raw_websocket(client.server.host, client.server.port)
    reader = await client.ws_connect("/ws")
    assert (await reader.receive_json(timeout=5))["type"] == "snapshot"
    for _ in range(100):
        if len(hub.clients) == 2:
            break
        await asyncio.sleep(0.01)

    # 2000 state changes of 8 KB each: far more than the stuck socket's buffers hold.
    n = 2000
    ids = [new_id() for _ in range(n)]
    sent_at: dict[str, float] = {}
    got: list[str] = []
    delays: list[float] = []

    async def read_all():
        while len(got) < n:
            msg = await reader.receive_json(timeout=10)
            got.append(msg["job"]["id"])
            delays.append(time.monotonic() - sent_at[msg["job"]["id"]])

    reading = asyncio.create_task(read_all())
    for i, job_id in enumerate(ids):
        sent_at[job_id] = time.monotonic()
        job = make_job(id=job_id, name="x" * 8000, source_ext="")
        hub.job_changed(job, progress_only=False)
        if i % 10 == 9:  # bursts a reading client keeps up with, but 8 MB/s in all
            await asyncio.sleep(0.01)
    await asyncio.wait_for(reading, 30)
    assert got == ids  # every state change, in order
    assert max(delays) < 2.0, max(delays)
    # the one that never read fell hopelessly behind and was closed
    for _ in range(300):
        if hub.evicted:
            break
        await asyncio.sleep(0.01)
    assert hub.evicted == 1 and len(hub.clients) == 1
    stuck.close()
    await reader.close()


async def test_shutdown_closes_sockets_with_1001(aiohttp_client, make_config):
    client = await aiohttp_client(create_app(make_config(watch={"enabled": False})))
    ws = await client.ws_connect("/ws")
    assert (await ws.receive_json(timeout=5))["type"] == "snapshot"
    await client.server.close()
    msg = await ws.receive(timeout=5)
    assert msg.type is aiohttp.WSMsgType.CLOSE
    assert msg.data == aiohttp.WSCloseCode.GOING_AWAY
    await ws.close()


async def test_not_a_websocket_handshake(client):
    resp = await client.get("/ws")
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "not_websocket"
