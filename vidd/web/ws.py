"""GET /ws: the live event stream. A snapshot on connect, then what the hub pushes."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import WSMsgType, web

from ..hub import snapshot_message
from ..job import Status
from ..store import Store
from .errors import ApiError
from .keys import GUARD, HUB, SERVICES, WEBSOCKETS

log = logging.getLogger(__name__)

SNAPSHOT_JOBS = 200
HEARTBEAT_S = 30.0
CLOSE_TIMEOUT_S = 3.0
MAX_INCOMING = 4096  # clients have nothing to say beyond a ping


async def snapshot(store: Store) -> list[dict[str, Any]]:
    """The newest jobs plus every running one (a long queue can push those off the page)."""
    jobs = await store.list_jobs(limit=SNAPSHOT_JOBS)
    seen = {j.id for j in jobs}
    running = await store.list_jobs(status=Status.RUNNING, limit=1000)
    jobs += [j for j in running if j.id not in seen]
    return [j.to_json() for j in jobs]


async def websocket(request: web.Request) -> web.StreamResponse:
    app = request.app
    hub = app[HUB]
    address = app[GUARD].address(request)
    if not hub.has_room(address):
        raise ApiError(503, "too_many_clients", "too many live connections; try again later")
    # compress=False: job messages are small, and deflating each one once per client
    # was most of the fan-out's CPU with a thousand browsers watching.
    sock = web.WebSocketResponse(
        compress=False, heartbeat=HEARTBEAT_S, timeout=CLOSE_TIMEOUT_S, max_msg_size=MAX_INCOMING
    )
    if not sock.can_prepare(request).ok:
        raise ApiError(400, "not_websocket", "this route expects a WebSocket handshake")
    await sock.prepare(request)
    app[WEBSOCKETS].add(sock)
    # Registered before the snapshot is read, so nothing that happens meanwhile is missed.
    client = hub.connect(sock, address)
    try:
        jobs = await snapshot(app[SERVICES].store)
        await sock.send_str(snapshot_message(jobs))
        client.start()
        async for msg in sock:
            if msg.type is WSMsgType.ERROR:
                break
    except (ConnectionError, RuntimeError) as e:
        log.debug("websocket closed: %s", e)
    finally:
        await hub.disconnect(client)
    return sock
