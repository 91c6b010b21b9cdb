"""The dispatcher: the front's three calls to the Celery broker (send an attempt, revoke
one, ping), each run in a thread with a timeout, never on the event loop: a broker that
is down or unreachable blocks its caller (celery_app.py).

The threads are few (a call that hangs keeps its slot until it returns; the next waits
within its own timeout) and daemonic (vidd's exit never waits for a broker). At most
one ping is in flight; a blocked one is joined, not repeated. Celery is imported in
those threads only, so a local vidd never loads it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from .celery_app import QUEUE, TASK_NAME, Dispatch

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 5.0
REVOKE_TIMEOUT_S = 5.0
PING_TIMEOUT_S = 3.0

T = TypeVar("T")


class DispatchFailed(Exception):
    """The broker did not take the message (down, unreachable, too slow)."""


class Dispatcher(Protocol):
    async def send(self, message: Dispatch) -> None:
        """Hand an attempt to the broker; DispatchFailed when it did not take it."""

    async def revoke(self, attempt_id: str) -> None:
        """Best effort: tell workers to drop an attempt (errors are logged, not raised)."""

    async def ping(self) -> str | None:
        """None when the broker answers, else why not, in words."""

    async def close(self) -> None: ...


class CeleryDispatcher:
    """The real one, over `celery_app.make_app`."""

    def __init__(self, broker_url: str, *, max_encode_s: float) -> None:
        self._broker_url = broker_url  # never logged: it holds the password
        self._max_encode_s = max_encode_s
        self._app: Any = None
        self._app_lock = threading.Lock()
        # Sends and revokes share two threads; pings have their own one.
        self._calls = Threads(2, "dispatch")
        self._pings = Threads(1, "broker-ping")
        self._ping: asyncio.Future[str | None] | None = None
        self.sent = 0

    def __repr__(self) -> str:
        return f"<CeleryDispatcher sent={self.sent}>"

    def _celery(self) -> Any:
        with self._app_lock:  # the threads may ask at once
            if self._app is None:
                from .celery_app import make_app

                self._app = make_app(self._broker_url, max_encode_s=self._max_encode_s)
            return self._app

    async def send(self, message: Dispatch) -> None:
        def send() -> None:
            self._celery().send_task(
                TASK_NAME,
                kwargs=message.to_kwargs(),
                task_id=message.attempt,
                queue=QUEUE,
                retry=False,
            )

        try:
            await self._calls.run(send, SEND_TIMEOUT_S)
        except TimeoutError:
            raise DispatchFailed(
                f"the broker did not take the task within {SEND_TIMEOUT_S:g} s"
            ) from None
        except Exception as e:
            raise DispatchFailed(f"the broker refused the task: {_words(e)}") from None
        self.sent += 1

    async def revoke(self, attempt_id: str) -> None:
        def revoke() -> None:
            self._celery().control.revoke(attempt_id)

        try:
            await self._calls.run(revoke, REVOKE_TIMEOUT_S)
        except Exception as e:  # best effort: the attempt's state already says stop
            log.info("dispatch: could not revoke attempt %s: %s", attempt_id, _words(e))

    async def ping(self) -> str | None:
        if self._ping is None or self._ping.done():
            self._ping = asyncio.ensure_future(self._ping_once())
        return await asyncio.shield(self._ping)

    async def _ping_once(self) -> str | None:
        def ping() -> None:
            with self._celery().connection_for_write() as conn:
                conn.connect()  # raises when the broker can't be reached
                conn.default_channel.client.ping()

        try:
            await self._pings.run(ping, PING_TIMEOUT_S)
        except TimeoutError:
            return f"the broker did not answer within {PING_TIMEOUT_S:g} s"
        except Exception as e:
            return f"the broker can't be reached: {_words(e)}"
        return None

    async def close(self) -> None:
        if self._ping is not None:
            self._ping.cancel()
            await asyncio.gather(self._ping, return_exceptions=True)


class Threads:
    """Blocking calls in daemon threads, at most `size` at once. A call that hangs keeps
    its thread and its slot until it returns; a new call waits for a slot within its own
    timeout, so a dead broker never piles up threads, and an exit never waits for them."""

    def __init__(self, size: int, name: str) -> None:
        self.size = size
        self.name = name
        self.busy = 0
        self._freed = asyncio.Event()

    def __repr__(self) -> str:
        return f"<Threads {self.name} {self.busy}/{self.size}>"

    async def run(self, call: Callable[[], T], timeout_s: float) -> T:
        """`call()` in a thread; TimeoutError after `timeout_s` (the thread goes on)."""
        async with asyncio.timeout(timeout_s):
            while self.busy >= self.size:
                self._freed.clear()
                await self._freed.wait()
            self.busy += 1
            loop = asyncio.get_running_loop()
            done: asyncio.Future[T] = loop.create_future()

            def finish(result: T | None, error: BaseException | None) -> None:
                self.busy -= 1
                self._freed.set()
                if done.done():
                    return  # timed out meanwhile
                if error is not None:
                    done.set_exception(error)
                else:
                    done.set_result(result)  # type: ignore[arg-type]

            def work() -> None:
                result: T | None = None
                error: BaseException | None = None
                try:
                    result = call()
                except BaseException as e:  # handed to the waiting coroutine
                    error = e
                try:
                    loop.call_soon_threadsafe(finish, result, error)
                except RuntimeError:  # the loop is closed: nobody waits any more
                    pass

            threading.Thread(target=work, name=self.name, daemon=True).start()
            return await done


def _words(e: BaseException) -> str:
    """An error in one line, without the broker URL (it holds the password)."""
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    if "redis://" in text or "rediss://" in text or "@" in text:
        return type(e).__name__
    return text[:200]
