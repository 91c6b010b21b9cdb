"""`wait_for`: asyncio.wait_for, except that a cancel always gets through.

In CPython 3.11, asyncio.wait_for swallows a cancel that comes as the awaited thing
finishes (python/cpython#86296, fixed in 3.12): the caller goes on as if nothing had
been asked. Around a loop that is a task that never ends: the worker's heartbeat ran on
after its attempt was over (a hang seen in CI), and the watcher's loops would have
outlived its stop. asyncio.timeout tells its own cancel from anyone else's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def wait_for(awaitable: Awaitable[T], timeout_s: float | None) -> T:
    """`await awaitable`, at most `timeout_s` seconds (None: no limit): TimeoutError after,
    with the awaitable cancelled."""
    async with asyncio.timeout(timeout_s):
        return await awaitable


async def wait_event(event: asyncio.Event, timeout_s: float | None) -> None:
    """Wait until `event` is set, at most `timeout_s` seconds; no error when the time runs
    out (the caller looks again)."""
    try:
        await wait_for(event.wait(), timeout_s)
    except TimeoutError:
        pass
