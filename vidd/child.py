"""One started child process, watched by the event loop itself: its stdout and stderr
as StreamReaders, its exit read from a pidfd.

Not asyncio's own subprocess transport: in CPython 3.11 that connects the pipes in a
task of its own, and when that task is cancelled (asyncio.run's last cancel of every
task, python/cpython#125502) or a start is cancelled half-way, the exit it has already
seen is never passed on, and `wait()` waits forever. A hang of exactly that shape
stopped this suite twice. Here there is no hidden task: the pipes are connected in
the caller's own task, a cancelled start kills the child's group and reaps it, and the
exit does not wait for the pipes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from typing import IO

STREAM_LIMIT = 64 << 10  # a StreamReader's line limit (and half its buffer), as asyncio's


class Child:
    """A process started by `start`, in a process group of its own (its pid is the
    group's id)."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.stdout: asyncio.StreamReader | None = None
        self.stderr: asyncio.StreamReader | None = None
        self._transports: list[asyncio.BaseTransport] = []
        loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[int] = loop.create_future()
        self._loop = loop
        # The pidfd turns readable when the child exits; the callback reaps it then.
        # Where there is none (a kernel before 5.3, or a seccomp filter that refuses
        # it), a thread waits for the exit instead.
        try:
            self._pidfd: int | None = os.pidfd_open(popen.pid)
        except OSError:
            self._pidfd = None
            name = f"wait-{popen.pid}"
            threading.Thread(target=self._wait_in_thread, name=name, daemon=True).start()
            return
        try:
            loop.add_reader(self._pidfd, self._reap)
        except BaseException:
            os.close(self._pidfd)
            raise

    def __repr__(self) -> str:
        return f"<Child pid={self.pid} returncode={self.returncode}>"

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    async def wait(self) -> int:
        """Wait for the child to exit (not for its pipes to close); its exit code, or
        minus the signal that ended it."""
        return await asyncio.shield(self._exited)

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def close_pipes(self) -> None:
        """Stop reading the child's output. What was read stays readable."""
        for transport in self._transports:
            transport.close()
        _close_files(self._popen)  # those not connected yet (a second close does nothing)

    def _reap(self) -> None:
        assert self._pidfd is not None
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        code = self._popen.poll()
        if code is None:  # readable means exited; never expected, but never hang on it
            code = self._popen.wait()
        self._exit_with(code)

    def _wait_in_thread(self) -> None:
        code = self._popen.wait()
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to tell
            self._loop.call_soon_threadsafe(self._exit_with, code)

    def _exit_with(self, code: int) -> None:
        if not self._exited.done():
            self._exited.set_result(code)

    async def _connect(self) -> None:
        if self._popen.stdout is not None:
            self.stdout = await self._connect_pipe(self._popen.stdout)
        if self._popen.stderr is not None:
            self.stderr = await self._connect_pipe(self._popen.stderr)

    async def _connect_pipe(self, pipe: IO[bytes]) -> asyncio.StreamReader:
        reader = asyncio.StreamReader(limit=STREAM_LIMIT, loop=self._loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=self._loop)
        transport, _ = await self._loop.connect_read_pipe(lambda: protocol, pipe)
        self._transports.append(transport)
        return reader


async def start(argv: Sequence[str], *, env: Mapping[str, str], stdout: int | None) -> Child:
    """Start `argv` (never through a shell) in a new process group, stdin from
    /dev/null, stderr to a pipe, stdout as asked (PIPE, DEVNULL or None: vidd's own).

    Cancelled, it leaves nothing behind: the group is killed and the child reaped."""
    popen = subprocess.Popen(  # noqa: S603 (an argument list, never a shell)
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.PIPE,
        env=dict(env),
        process_group=0,
    )
    try:
        child = Child(popen)
    except BaseException:
        popen.kill()
        popen.wait()
        _close_files(popen)
        raise
    try:
        await child._connect()
    except BaseException:
        child.close_pipes()
        child.signal_group(signal.SIGKILL)
        await _reaped(child)
        raise
    return child


async def _reaped(child: Child) -> None:
    """Wait for a killed child's exit, even through another cancel: it comes at once,
    and a child left unreaped would outlive its owner."""
    while True:
        try:
            await child.wait()
            return
        except asyncio.CancelledError:
            continue


def _close_files(popen: subprocess.Popen[bytes]) -> None:
    for pipe in (popen.stdout, popen.stderr):
        if pipe is not None:
            pipe.close()
