"""The WebSocket hub: fans job events out to every connected client, each through its own
small bounded queue, so that one slow client never holds up the others.

The store calls `job_changed` / `job_deleted` synchronously for every change; the hub
only encodes the message once and appends it to each client's queue. Progress for a job
is throttled to `PROGRESS_HZ` and coalesces in a queue (a newer one replaces the stale one
still waiting); state changes are never dropped, and a client whose queue fills with them,
or whose send does not complete in time, is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from . import timeouts
from .job import Job, Status

log = logging.getLogger(__name__)

PROGRESS_HZ = 4
QUEUE_SIZE = 64  # messages waiting for one client before it counts as hopelessly behind
SEND_TIMEOUT_S = 10.0  # a single send that takes longer than this closes the client
GOING_AWAY = 1001
TRY_AGAIN_LATER = 1013


class Cancellable(Protocol):
    def cancel(self) -> None: ...


# When to send a held-back progress: (delay in seconds, callback) -> a handle to cancel.
Scheduler = Callable[[float, Callable[[], None]], Cancellable]


def _call_later(delay: float, callback: Callable[[], None]) -> Cancellable:
    return asyncio.get_running_loop().call_later(delay, callback)


class Socket(Protocol):
    """What the hub needs from a WebSocket (aiohttp's WebSocketResponse fits)."""

    @property
    def closed(self) -> bool: ...

    async def send_str(self, data: str, compress: int | None = None) -> None: ...

    async def close(self, *, code: int = ..., message: bytes = ...) -> bool: ...


@dataclass
class _Message:
    text: str
    job_id: str | None  # the job a progress message is about; None for a state message


class Subscriber:
    """One connected socket, its queue and the task that drains it."""

    def __init__(self, hub: Hub, socket: Socket, queue_size: int, address: str = "") -> None:
        self.hub = hub
        self.address = address
        self.socket = socket
        self.queue_size = queue_size
        self._queue: deque[_Message] = deque()
        self._progress: dict[str, _Message] = {}  # job id -> its progress waiting in _queue
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.closing = False
        self.sent = 0
        self.sending_since: float | None = None  # when the send in progress began

    def __repr__(self) -> str:
        return f"<Subscriber queued={len(self._queue)} sent={self.sent} closing={self.closing}>"

    @property
    def backlog(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        """Begin sending what is queued (call after the snapshot has gone out)."""
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name="ws-client")

    def push_progress(self, job_id: str, text: str) -> None:
        waiting = self._progress.get(job_id)
        if waiting is not None:  # still unsent: the newer one replaces it in place
            waiting.text = text
            return
        if len(self._queue) >= self.queue_size and not self._drop_one_progress():
            return  # full of state changes: progress is the thing we can afford to lose
        msg = _Message(text, job_id)
        self._progress[job_id] = msg
        self._queue.append(msg)
        self._ready.set()

    def push_state(self, job_id: str, text: str) -> None:
        # Progress queued before this change is older than it; the change carries the news.
        stale = self._progress.pop(job_id, None)
        if stale is not None:
            self._queue.remove(stale)
        if len(self._queue) >= self.queue_size and not self._drop_one_progress():
            self.hub.evict(self, "too far behind")
            return
        self._queue.append(_Message(text, None))
        self._ready.set()

    def _drop_one_progress(self) -> bool:
        for job_id, msg in self._progress.items():
            del self._progress[job_id]
            self._queue.remove(msg)
            return True
        return False

    async def _drain(self) -> None:
        try:
            while not self.closing:
                if not self._queue:
                    self._ready.clear()
                    await self._ready.wait()
                    continue
                msg = self._queue.popleft()
                if msg.job_id is not None:
                    self._progress.pop(msg.job_id, None)
                # No timer per send (a thousand clients make that the fan-out's main
                # cost): the hub's sweep closes a client whose send takes too long.
                self.sending_since = time.monotonic()
                try:
                    await self.socket.send_str(msg.text)
                except (ConnectionError, RuntimeError):  # closed under us
                    self.hub.evict(self, "connection lost")
                    return
                finally:
                    self.sending_since = None
                self.sent += 1
        except asyncio.CancelledError:
            pass

    async def close(self, code: int, reason: str) -> None:
        self.closing = True
        self._ready.set()
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        # A client that isn't reading can stall the closing handshake too.
        with contextlib.suppress(Exception):
            await timeouts.wait_for(
                self.socket.close(code=code, message=reason.encode()[:120]), 2.0
            )


class Hub:
    """The store listener that turns job changes into WebSocket messages."""

    def __init__(
        self,
        max_clients: int,
        *,
        max_per_address: int | None = None,
        queue_size: int = QUEUE_SIZE,
        progress_hz: float = PROGRESS_HZ,
        clock: Callable[[], float] = time.monotonic,
        schedule: Scheduler = _call_later,
    ) -> None:
        """`clock` and `schedule` time the progress throttle (a test passes its own)."""
        self.max_clients = max_clients
        # One address can't take every slot: strangers must not lock the page out.
        self.max_per_address = max_per_address or max_clients
        self._per_address: dict[str, int] = {}
        self.queue_size = queue_size
        self.progress_interval = 1.0 / progress_hz
        self._clock = clock
        self._schedule = schedule
        self.clients: set[Subscriber] = set()
        self._last_progress: dict[str, float] = {}  # job id -> when its progress last went out
        self._pending: dict[str, Cancellable] = {}  # a trailing progress, per job
        self._latest: dict[str, Job] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self.evicted = 0

    def __repr__(self) -> str:
        return f"<Hub clients={len(self.clients)} evicted={self.evicted}>"

    def has_room(self, address: str = "") -> bool:
        """Whether one more client, from this address, may connect."""
        if len(self.clients) >= self.max_clients:
            return False
        return self._per_address.get(address, 0) < self.max_per_address

    def connect(self, socket: Socket, address: str = "") -> Subscriber:
        """Register a socket: it queues events from now on; call `start` after the snapshot."""
        client = Subscriber(self, socket, self.queue_size, address)
        self.clients.add(client)
        self._per_address[address] = self._per_address.get(address, 0) + 1
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep(), name="ws-sweep")
        return client

    async def _sweep(self) -> None:
        """Close clients whose current send has taken longer than SEND_TIMEOUT_S."""
        while True:
            await asyncio.sleep(min(1.0, SEND_TIMEOUT_S / 4))
            now = time.monotonic()
            for client in list(self.clients):
                since = client.sending_since
                if since is not None and now - since > SEND_TIMEOUT_S:
                    self.evict(client, "send timed out")

    async def disconnect(self, client: Subscriber) -> None:
        self._forget(client)
        await client.close(GOING_AWAY, "bye")

    def _forget(self, client: Subscriber) -> None:
        if client in self.clients:
            self.clients.discard(client)
            left = self._per_address.get(client.address, 1) - 1
            if left > 0:
                self._per_address[client.address] = left
            else:
                self._per_address.pop(client.address, None)

    def evict(self, client: Subscriber, reason: str) -> None:
        """Close a client that fell hopelessly behind, without waiting for it."""
        if client not in self.clients:
            return
        self._forget(client)
        self.evicted += 1
        log.info("websocket client closed: %s", reason)
        task = asyncio.create_task(client.close(TRY_AGAIN_LATER, reason))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    # --- the store listener interface -------------------------------------------------------

    def job_changed(self, job: Job, *, progress_only: bool) -> None:
        if not progress_only:
            self._cancel_pending(job.id)
            self._last_progress.pop(job.id, None)
            self._broadcast_state(job.id, _job_message(job))
            return
        if job.status is not Status.RUNNING:
            return
        t = self._clock()
        wait = self._last_progress.get(job.id, -1e9) + self.progress_interval - t
        if wait <= 0:
            self._send_progress(job)
            return
        # Too soon: keep the newest and send it when the interval is up.
        self._latest[job.id] = job
        if job.id not in self._pending:
            job_id = job.id
            self._pending[job_id] = self._schedule(wait, lambda: self._flush_progress(job_id))

    def job_deleted(self, job_id: str) -> None:
        self._cancel_pending(job_id)
        self._last_progress.pop(job_id, None)
        self._broadcast_state(job_id, json.dumps({"type": "deleted", "id": job_id}))

    # --- internals ----------------------------------------------------------------------------

    def _flush_progress(self, job_id: str) -> None:
        self._pending.pop(job_id, None)
        job = self._latest.pop(job_id, None)
        if job is not None:
            self._send_progress(job)

    def _send_progress(self, job: Job) -> None:
        self._last_progress[job.id] = self._clock()
        text = _job_message(job)
        for client in list(self.clients):
            client.push_progress(job.id, text)

    def _broadcast_state(self, job_id: str, text: str) -> None:
        for client in list(self.clients):
            client.push_state(job_id, text)

    def _cancel_pending(self, job_id: str) -> None:
        handle = self._pending.pop(job_id, None)
        if handle is not None:
            handle.cancel()
        self._latest.pop(job_id, None)

    async def close(self) -> None:
        """Close every client with 1001 (going away) and stop the timers."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        for handle in self._pending.values():
            handle.cancel()
        self._pending.clear()
        self._latest.clear()
        clients, self.clients = list(self.clients), set()
        self._per_address.clear()
        await asyncio.gather(*(c.close(GOING_AWAY, "server shutting down") for c in clients))
        await asyncio.gather(*self._closing, return_exceptions=True)


def _job_message(job: Job) -> str:
    return json.dumps({"type": "job", "job": job.to_json()})


def snapshot_message(jobs: list[dict[str, Any]]) -> str:
    return json.dumps({"type": "snapshot", "jobs": jobs})
