"""Our own small sd_notify: READY, STATUS, STOPPING and the watchdog, sent as datagrams to
systemd's notify socket. No dependency; every send error is logged and never fatal."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable

from . import timeouts

log = logging.getLogger(__name__)

# sockaddr_un.sun_path is 108 bytes; a longer NOTIFY_SOCKET can't be a real socket.
_MAX_ADDRESS = 107
_MAX_STATUS = 200


class Notifier:
    """Talks to systemd if vidd was started by it, and does nothing otherwise."""

    def __init__(
        self,
        address: str | None = None,
        watchdog_usec: str | None = None,
        watchdog_pid: str | None = None,
    ) -> None:
        self._address = _parse_address(address)
        self._interval = _parse_interval(watchdog_usec, watchdog_pid)
        self._sock: socket.socket | None = None
        self._last_status: str | None = None
        self._failed = False
        self.enabled = self._address is not None

    @classmethod
    def from_env(cls) -> Notifier:
        """Take NOTIFY_SOCKET and the watchdog variables out of os.environ.

        Popping them means no child process (HandBrakeCLI, ffmpeg) can inherit them
        and talk to systemd in vidd's name.
        """
        return cls(
            os.environ.pop("NOTIFY_SOCKET", None),
            os.environ.pop("WATCHDOG_USEC", None),
            os.environ.pop("WATCHDOG_PID", None),
        )

    def __repr__(self) -> str:
        return f"Notifier(enabled={self.enabled}, watchdog={self._interval})"

    def ready(self) -> None:
        self._send("READY=1")

    def status(self, text: str) -> None:
        """Send STATUS=<text>, flattened to one line, only when it differs from the last one."""
        line = " ".join(text.split())[:_MAX_STATUS]
        if line == self._last_status:
            return
        self._last_status = line
        self._send(f"STATUS={line}")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def watchdog_interval(self) -> float | None:
        """Half of WATCHDOG_USEC in seconds, as sd_watchdog_enabled(3) advises; None if off."""
        return self._interval if self.enabled else None

    async def watchdog(self, healthy: Callable[[], Awaitable[bool]]) -> None:
        """Ping WATCHDOG=1 every interval while `healthy()` says yes in time; runs until cancelled.

        A blocked event loop can't run this coroutine, so systemd notices a hung loop too.
        Without a watchdog it just waits to be cancelled, so callers may start it regardless.
        """
        interval = self.watchdog_interval()
        if interval is None:
            await asyncio.Event().wait()
            return
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            if await self._check(healthy, interval):
                self._send("WATCHDOG=1")
            elapsed = loop.time() - started
            await asyncio.sleep(max(0.0, interval - elapsed))

    async def _check(self, healthy: Callable[[], Awaitable[bool]], timeout: float) -> bool:
        try:
            ok = await timeouts.wait_for(healthy(), timeout)
        except TimeoutError:
            log.warning(
                "health check took longer than %.1f s; withholding the watchdog ping", timeout
            )
            return False
        except Exception as e:  # an unhealthy store is data for systemd, not a crash here
            log.warning("health check failed (%s); withholding the watchdog ping", e)
            return False
        if not ok:
            log.warning("not healthy; withholding the watchdog ping")
        return bool(ok)

    def _send(self, message: str) -> None:
        if self._address is None:
            return
        try:
            if self._sock is None:
                # Non-blocking: a stuck systemd must never stall the event loop.
                self._sock = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
                )
            self._sock.sendto(message.encode("utf-8", "replace"), self._address)
        except OSError as e:
            # The first failure is a warning; repeats (every watchdog tick) would only spam.
            level = logging.DEBUG if self._failed else logging.WARNING
            log.log(level, "sd_notify %s failed: %s", message.split("=", 1)[0], e)
            self._failed = True
        else:
            self._failed = False

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _parse_address(value: str | None) -> str | None:
    if not value:
        return None
    if value.startswith("@"):
        # An abstract-namespace socket: the leading '@' stands for a NUL byte.
        return "\0" + value[1:]
    if value.startswith("/") and len(value.encode()) <= _MAX_ADDRESS:
        return value
    log.warning("ignoring NOTIFY_SOCKET=%r: not an absolute path or @abstract name", value)
    return None


def _parse_interval(usec: str | None, pid: str | None) -> float | None:
    if not usec:
        return None
    if pid and pid.strip() != str(os.getpid()):
        return None  # the watchdog was meant for another process (e.g. a wrapper)
    try:
        value = int(usec)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not an integer", usec)
        return None
    return value / 2_000_000 if value > 0 else None
