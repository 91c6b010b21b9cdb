"""A pytest plugin: a test still running after TASK_DUMP_AFTER_S has the stack of every
asyncio task printed to stderr, each with the test's id.

faulthandler (at 100 s) shows threads only, and a hung event loop's thread just sits in
select(): what each task awaits is what tells where it hangs. The dump is read from a
timer thread while the loop is idle, read-only."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from typing import TextIO

import pytest
from _pytest.faulthandler import fault_handler_stderr_fd_key

TASK_DUMP_AFTER_S = 90.0  # before faulthandler's dump (100 s) and pytest-timeout (120 s)


def dump_tasks(nodeid: str, fd: int) -> None:
    with open(fd, "w", closefd=False) as out:
        _dump(nodeid, out)


def _dump(nodeid: str, out: TextIO) -> None:
    tasks = list(asyncio.tasks._all_tasks)  # every loop's tasks (a WeakSet)
    print(f"\n=== {nodeid}: still running after {TASK_DUMP_AFTER_S:g} s; "
          f"{len(tasks)} asyncio tasks ===", file=out)  # fmt: skip
    for task in tasks:
        try:
            if not task.done():
                print(f"--- {task!r}", file=out)
                task.print_stack(file=out)
        except Exception as e:  # a task changing under us: go on with the others
            print(f"--- (could not read a task: {e!r})", file=out)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    # Where faulthandler writes: the run's own stderr, not the test's captured one.
    fd = item.config.stash.get(fault_handler_stderr_fd_key, None)
    if fd is None:
        fd = sys.__stderr__.fileno() if sys.__stderr__ is not None else 2
    timer = threading.Timer(TASK_DUMP_AFTER_S, dump_tasks, args=(item.nodeid, fd))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
