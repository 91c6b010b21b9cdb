"""The broker's state as the front knows it: pinged in the background (the dispatcher
runs each ping in a thread) every CHECK_S, its last answer kept, so that nothing that
asks (the pool's gate, /api/workers) ever waits for a broker."""

from __future__ import annotations

import asyncio
import logging
import time

from .dispatch import Dispatcher

log = logging.getLogger(__name__)

CHECK_S = 2.0


class BrokerWatch:
    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.reason: str | None = None  # why it can't be used; None when it answers
        self.checked: float | None = None  # monotonic time of the last answer
        self._first = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<BrokerWatch {self.state}>"

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._watch(), name="broker-watch")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _watch(self) -> None:
        while True:
            self.heard(await self.dispatcher.ping())
            await asyncio.sleep(CHECK_S)

    def heard(self, reason: str | None) -> None:
        """What a ping (or a failed send) said: None when the broker answered."""
        down_before = self.checked is not None and self.reason is not None
        if reason is not None and not down_before:
            log.warning("workers: the broker is down: %s; dispatching waits", reason)
        elif reason is None and down_before:
            log.info("workers: the broker is back; dispatching resumes")
        self.reason = reason
        self.checked = time.monotonic()
        self._first.set()

    async def unavailable(self) -> str | None:
        """Why nothing can be dispatched now, or None. Waits only for the first ping."""
        if self.checked is None:
            self.start()
            await self._first.wait()
        return self.reason

    @property
    def state(self) -> str | None:
        """ "up", "down", or None before the first ping (never waits)."""
        if self.checked is None:
            return None
        return "down" if self.reason is not None else "up"
