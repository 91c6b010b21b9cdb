"""A child's start can be cancelled at any point, and leaves no process and no hang.

Each case runs in an event loop of its own, in a thread, so a hang fails the case in
seconds instead of stopping the worker. The cases cancel at each of the first loop
turns of a start: before, while and after its pipes are connected.
"""

from __future__ import annotations

import asyncio
import errno
import os
import sys
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from testkit.procs import live_processes
from vidd import children
from vidd.child import Child

TURNS = range(8)  # a start takes 3 or 4 turns of the loop; cancel at each, and after


def alive_with(marker: str) -> list[int]:
    """The pids of processes (not zombies) whose command line holds `marker`."""
    return [pid for pid, argv in live_processes() if marker.encode() in b" ".join(argv)]


def in_own_loop(main: Callable[[], Coroutine[Any, Any, None]], within: float = 10.0) -> None:
    finished = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as e:  # reported below, in the test's own thread
            errors.append(e)
        finished.set()

    threading.Thread(target=run, daemon=True).start()
    assert finished.wait(within), f"the loop did not finish within {within} s: a hang"
    if errors:
        raise errors[0]


def marked(turns: int) -> tuple[list[str], str]:
    marker = f"vidd-child-test-{os.getpid()}-{turns}-{threading.get_native_id()}"
    return [sys.executable, "-c", "import time, sys; time.sleep(30)", marker], marker


@pytest.mark.parametrize("turns", TURNS)
def test_a_start_cancelled_at_any_turn_ends_at_once_and_leaves_no_child(turns):
    argv, marker = marked(turns)

    async def main() -> None:
        task = asyncio.create_task(children.spawn(argv))
        for _ in range(turns):
            await asyncio.sleep(0)
        task.cancel()
        try:
            proc = await task
        except asyncio.CancelledError:
            return
        await children.stop(proc, 1.0)  # started before the cancel came

    in_own_loop(main)
    assert alive_with(marker) == []


@pytest.mark.parametrize("turns", TURNS)
def test_a_loop_ending_with_a_start_under_way_does_not_hang(turns):
    """asyncio.run's last step cancels every task left, asyncio's own among them:
    python/cpython#125502 hangs there forever with asyncio's subprocess transport."""
    argv, marker = marked(turns)
    started: list[Child] = []

    async def start() -> None:
        proc = await children.spawn(argv)
        started.append(proc)
        try:
            await proc.wait()
        finally:
            await asyncio.shield(children.stop(proc, 1.0))

    async def main() -> None:
        asyncio.create_task(start())  # noqa: RUF006 (left to asyncio.run on purpose)
        for _ in range(turns):
            await asyncio.sleep(0)

    in_own_loop(main)
    assert alive_with(marker) == []
    assert all(proc.returncode is not None for proc in started)


async def test_wait_does_not_wait_for_a_pipe_a_grandchild_holds(tmp_path):
    """The exit is the leader's: a grandchild left holding stdout doesn't hide it."""
    code = (
        "import subprocess, sys; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); "
        "sys.exit(3)"
    )
    proc = await children.spawn([sys.executable, "-c", code])
    assert await asyncio.wait_for(proc.wait(), 10) == 3
    assert proc.returncode == 3
    await children.stop(proc, 1.0)  # kills the grandchild with the group
    assert proc.stdout is not None
    assert await asyncio.wait_for(proc.stdout.read(), 5) == b""


async def test_output_is_read_to_the_end_and_the_exit_code_kept():
    code = "import sys; sys.stdout.write('x' * 300000); sys.stderr.write('done'); sys.exit(5)"
    proc = await children.spawn([sys.executable, "-c", code])
    assert proc.stdout is not None and proc.stderr is not None
    out, err, status = await asyncio.gather(proc.stdout.read(), proc.stderr.read(), proc.wait())
    assert (len(out), err, status) == (300000, b"done", 5)


async def test_a_signal_ends_it_with_minus_the_signal():
    proc = await children.spawn(["sleep", "30"])
    assert await children.stop(proc, 5.0) == -15


async def test_without_pidfds_a_thread_waits_for_the_exit(monkeypatch):
    """A kernel before 5.3, or a seccomp filter that refuses pidfd_open."""

    def refused(pid: int, flags: int = 0) -> int:
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", refused)
    proc = await children.spawn([sys.executable, "-c", "print('hi'); raise SystemExit(4)"])
    assert proc.stdout is not None
    assert await asyncio.wait_for(proc.stdout.read(), 10) == b"hi\n"
    assert await asyncio.wait_for(proc.wait(), 10) == 4
    code, out, _ = await children.run(["sleep", "0.1"], timeout_s=10)
    assert (code, out) == (0, "")
