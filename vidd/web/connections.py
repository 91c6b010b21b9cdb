"""How many connections vidd holds, and from whom: a cap per client address and one
overall, enforced as each TCP connection arrives (before any byte is read), so that idle
or slow strangers can't take every descriptor. A refused connection gets a short 503.

Timeouts for a request's head and for idle keep-alive are aiohttp's keepalive timer
(armed when a connection opens and after each response, fired only while no complete
request has arrived); see `handler_args`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from typing import Any

from aiohttp import web

from ..config import Web

log = logging.getLogger(__name__)

# Descriptors kept for what is not a client: the database, files being served or
# written, HandBrake's pipes, the inbox watch.
RESERVED_FDS = 128
_BODY = json.dumps(
    {"error": {"code": "too_many_connections", "message": "too many connections; try again"}}
).encode()
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: 5\r\nConnection: close\r\nContent-Length: "
    + str(len(_BODY)).encode()
    + b"\r\n\r\n"
    + _BODY
)


# After an early answer (408, 413) aiohttp reads and drops the rest of the body for this
# long, so that the client sees the answer rather than a reset; its default is 10 s.
LINGER_S = 2.0


def handler_args(config: Web) -> dict[str, Any]:
    """Keyword arguments for aiohttp's request handler."""
    return {"keepalive_timeout": config.idle_timeout_s, "lingering_time": LINGER_S}


def overall_cap(config: Web) -> int:
    """web.max_connections, or what the descriptor limit leaves room for."""
    if config.max_connections:
        return config.max_connections
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 65536
    return max(16, soft - RESERVED_FDS)


class Limits:
    def __init__(self, per_client: int, overall: int) -> None:
        self.per_client = per_client
        self.overall = overall
        self.open = 0
        self.refused = 0
        self._by_address: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"<Limits open={self.open}/{self.overall} refused={self.refused}>"

    def admit(self, address: str) -> bool:
        held = self._by_address.get(address, 0)
        if self.open >= self.overall or held >= self.per_client:
            self.refused += 1
            if self.refused in (1, 10, 100) or self.refused % 1000 == 0:
                log.warning(
                    "connection from %s refused (%d open, %d from it); %d refused so far",
                    address, self.open, held, self.refused,
                )  # fmt: skip
            return False
        self.open += 1
        self._by_address[address] = held + 1
        return True

    def release(self, address: str) -> None:
        self.open -= 1
        left = self._by_address.get(address, 1) - 1
        if left > 0:
            self._by_address[address] = left
        else:
            self._by_address.pop(address, None)


class _Counted(asyncio.Protocol):
    """Stands in front of aiohttp's protocol: counts the connection, or refuses it."""

    def __init__(self, inner: asyncio.Protocol, limits: Limits) -> None:
        self.inner = inner
        self.limits = limits
        self.address: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if peer else "unknown"
        if not self.limits.admit(address):
            assert isinstance(transport, asyncio.Transport)
            transport.write(REFUSAL)
            transport.close()
            return
        self.address = address
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.address is None:
            return
        self.limits.release(self.address)
        self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.address is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.address is not None else None

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class GuardedSite(web.BaseSite):
    """A TCP site whose every connection goes through `Limits` first."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, limits: Limits) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self.limits = limits

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()

        def factory() -> asyncio.Protocol:
            # `server()` makes the protocol (JsonErrorRunner's, whose own answers are in
            # the usual error shape), counted here first.
            return _Counted(server(), self.limits)

        self._server = await loop.create_server(factory, self._host, self._port)
