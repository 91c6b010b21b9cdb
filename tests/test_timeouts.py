"""A cancel always gets through a wait with a time limit.

CPython 3.11's asyncio.wait_for swallows a cancel that comes as the awaited thing
finishes (python/cpython#86296). A CI run hung on it: the worker's heartbeat went on
posting after its attempt was over, and the attempt waited for it for ever.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from vidd import timeouts
from vidd.worker import Heartbeat

VIDD = Path(__file__).resolve().parent.parent / "vidd"


@pytest.mark.parametrize("turns", range(4))
async def test_a_loop_of_waits_ends_when_cancelled_as_its_event_is_set(turns):
    event = asyncio.Event()

    async def loop() -> None:
        while True:  # a watcher's loop, in short
            try:
                await timeouts.wait_for(event.wait(), 30)
            except TimeoutError:
                pass
            event.clear()

    task = asyncio.create_task(loop())
    await asyncio.sleep(0.01)
    event.set()
    for _ in range(turns):
        await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2)
    assert task in done and task.cancelled(), "the cancel was swallowed: the loop ran on"


async def test_the_time_limit_still_holds():
    with pytest.raises(TimeoutError):
        await timeouts.wait_for(asyncio.sleep(5), 0.05)
    assert await timeouts.wait_for(asyncio.sleep(0, "ok"), 1) == "ok"
    assert await timeouts.wait_for(asyncio.sleep(0, "ok"), None) == "ok"


class QuietFront:
    """A front that takes every progress post at once."""

    def __init__(self) -> None:
        self.posts = 0

    async def progress(self, *latest: Any) -> None:
        self.posts += 1


@pytest.mark.parametrize("turns", range(3))
async def test_the_heartbeat_ends_when_cancelled_as_news_comes(turns):
    front = QuietFront()
    beat = Heartbeat(front, lease_s=60.0, interval_s=0.25)  # type: ignore[arg-type]
    task = asyncio.create_task(beat.run())
    while front.posts == 0:  # the first post, then it waits for news
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)  # past interval_s: news would be posted at once
    beat.update(0.5, 10.0, 1.0)  # what the encode's last progress line does
    for _ in range(turns):
        await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2)
    assert task in done and task.cancelled(), "the heartbeat ran on after its cancel"


def test_vidd_never_uses_asyncio_wait_for():
    found = [
        f"{path.relative_to(VIDD.parent)}:{n}"
        for path in sorted(VIDD.rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\basyncio\.wait_for\(", line)
    ]
    assert found == [], "use timeouts.wait_for: asyncio's swallows a cancel in 3.11"
