"""A dispatcher for tests of the front's side of remote workers: it records the messages
it is given instead of talking to a broker, and can play a broker that is down or one
whose calls block their thread (to prove the event loop never waits for them)."""

from __future__ import annotations

import asyncio
import threading
import time

from vidd.celery_app import Dispatch
from vidd.dispatch import DispatchFailed


class FakeDispatcher:
    def __init__(self, *, send_delay_s: float = 0.0) -> None:
        self.sent: list[Dispatch] = []
        self.revoked: list[str] = []
        self.down: str | None = None  # set: pings say so and sends fail
        self.send_delay_s = send_delay_s  # each send blocks its thread this long
        self.pings = 0
        self.arrived = asyncio.Event()  # set on each message

    def __repr__(self) -> str:
        return f"<FakeDispatcher sent={len(self.sent)} down={self.down!r}>"

    async def send(self, message: Dispatch) -> None:
        if self.send_delay_s:
            await _blocked_thread(self.send_delay_s)
        if self.down is not None:
            raise DispatchFailed(self.down)
        self.sent.append(message)
        self.arrived.set()

    async def revoke(self, attempt_id: str) -> None:
        self.revoked.append(attempt_id)

    async def ping(self) -> str | None:
        self.pings += 1
        return self.down

    async def close(self) -> None:
        pass

    async def next_message(self, count: int, timeout: float = 10.0) -> Dispatch:
        """Wait until `count` messages were sent; the last one."""
        deadline = time.monotonic() + timeout
        while len(self.sent) < count:
            self.arrived.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{count} message(s) expected, {len(self.sent)} sent")
            try:
                await asyncio.wait_for(self.arrived.wait(), left)
            except TimeoutError:
                continue
        return self.sent[count - 1]


async def _blocked_thread(seconds: float) -> None:
    """A call that blocks a thread of its own for `seconds`, as a send to a broker that
    does not answer does. A daemon thread: a test's end need not wait for it."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def block() -> None:
        time.sleep(seconds)
        try:
            loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))
        except RuntimeError:  # the loop is closed: the test is over
            pass

    threading.Thread(target=block, daemon=True, name="blocked-send").start()
    await done
