"""The dispatcher: the front's three calls to the Celery broker (send an attempt, revoke
one, ping), each run in a thread of its own small pool with a timeout, never on the
event loop: a broker that is down or unreachable blocks its caller (celery_app.py).

At most one ping is in flight; a blocked one is joined, not repeated. Celery is imported
in those threads only, so a local vidd never loads it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
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
        # Sends and revokes share two threads; pings have their own one. A broker that
        # hangs holds these threads, never more: calls queue behind them and time out.
        self._calls = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="dispatch")
        self._pings = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="broker-ping")
        self._ping: asyncio.Future[str | None] | None = None
        self.sent = 0

    def __repr__(self) -> str:
        return f"<CeleryDispatcher sent={self.sent}>"

    def _celery(self) -> Any:
        if self._app is None:
            from .celery_app import make_app

            self._app = make_app(self._broker_url, max_encode_s=self._max_encode_s)
        return self._app

    async def _in_thread(
        self, pool: concurrent.futures.Executor, call: Callable[[], T], timeout_s: float
    ) -> T:
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(loop.run_in_executor(pool, call), timeout_s)

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
            await self._in_thread(self._calls, send, SEND_TIMEOUT_S)
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
            await self._in_thread(self._calls, revoke, REVOKE_TIMEOUT_S)
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
            await self._in_thread(self._pings, ping, PING_TIMEOUT_S)
        except TimeoutError:
            return f"the broker did not answer within {PING_TIMEOUT_S:g} s"
        except Exception as e:
            return f"the broker can't be reached: {_words(e)}"
        return None

    async def close(self) -> None:
        if self._ping is not None:
            self._ping.cancel()
        self._calls.shutdown(wait=False, cancel_futures=True)
        self._pings.shutdown(wait=False, cancel_futures=True)


def _words(e: BaseException) -> str:
    """An error in one line, without the broker URL (it holds the password)."""
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    if "redis://" in text or "rediss://" in text or "@" in text:
        return type(e).__name__
    return text[:200]
