"""Child processes: started from an argument list (never a shell) in a process group of
their own, and always stopped and reaped the same way. The tools that read untrusted
media run in a box (`Box`, set up by sandbox.py): a minimal environment, no
capabilities, no network where possible, and only the files they need.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from . import child, timeouts
from .child import Child

# Variables a child must never inherit: systemd's notify socket and watchdog belong
# to vidd alone.
MAX_OUTPUT = 4 << 20  # bytes kept of each stream of a short command (a scan's JSON is ~10 KB)
PRIVATE_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")


POLICY_PASSES = 3  # set_priority's passes over a group's threads at most
SANDBOX = Path(__file__).with_name("sandbox.py")
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Box:
    """What a boxed child may touch: `home` (its HOME and TMPDIR, writable), `reads`,
    `writes` (folders), and these variables of vidd's own environment beyond PATH,
    HOME, TMPDIR and LANG."""

    home: Path
    reads: tuple[Path, ...] = ()
    writes: tuple[Path, ...] = ()
    pass_env: tuple[str, ...] = ()

    def command(self, args: Sequence[str]) -> tuple[list[str], dict[str, str]]:
        """The argument list that runs `args` in this box, and its environment."""
        argv = [sys.executable, "-I", "-S", str(SANDBOX)]
        for path in self.reads:
            argv += ["--read", str(path)]
        for path in (self.home, *self.writes):
            argv += ["--write", str(path)]
        home = str(self.home)
        env = {"PATH": SAFE_PATH, "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8"}
        env.update({k: os.environ[k] for k in self.pass_env if k in os.environ})
        return [*argv, "--", *args], env


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PRIVATE_ENV}
    env.update(extra or {})
    return env


def _pdeathsig_prefix() -> list[str]:
    # util-linux's setpriv makes the kernel kill the child if vidd dies (kill -9),
    # so an orphaned encode never burns CPU after a crash.
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


_PREFIX = _pdeathsig_prefix()


async def spawn(
    args: Sequence[str],
    *,
    nice: int = 0,
    background: bool = False,
    stdout: int | None = asyncio.subprocess.PIPE,
    env: Mapping[str, str] | None = None,
    box: Box | None = None,
) -> Child:
    """Start `args` in a process group of its own, at the given niceness (in the
    background, see set_priority, if asked).

    A process group, not a new session: with the kernel's autogroup scheduling each
    session is its own CPU group, and nice would then only rank threads inside it, so
    the oldest encode could not be given the CPU first. A group is enough to signal the
    child and all it starts, and keeps it out of the terminal's Ctrl-C.
    """
    if box is not None:
        argv, environment = box.command(args)
    else:
        argv, environment = [*_PREFIX, *args], child_env(env)
    proc = await child.start(argv, env=environment, stdout=stdout)
    if background:
        set_priority(proc, nice, background=True)
    elif nice:  # a new child has vidd's policy already: only its nice value to set
        _set_nice(proc, nice)
    return proc


def set_priority(proc: Child, nice: int, *, background: bool = False) -> bool:
    """Set the scheduling of every thread of the child's process group: its nice value,
    and whether it runs in the background.

    In the background (SCHED_IDLE) a child gets only CPU time that no normal process
    wants, however many threads it has. At a high nice value it would still take a
    share: measured on 2 cores, two encodes at nice 10 and 15 beside a first at nice 5
    made the first take twice as long; in the background, 1.4 to 1.7 times.

    PRIO_PGRP reaches every thread for the nice value; the policy is set thread by
    thread. Moving a child up again (out of the background, or to a lower nice value)
    needs CAP_SYS_NICE or RLIMIT_NICE, so failure is tolerated (see can_move_up).
    """
    policy = os.SCHED_IDLE if background else os.SCHED_OTHER
    try:
        # Again while a pass finds threads to change: one started meanwhile by a thread
        # not yet changed took the old policy.
        for _ in range(POLICY_PASSES):
            changed = False
            for tid in _group_threads(proc.pid):
                with contextlib.suppress(ProcessLookupError):  # a thread that just ended
                    if os.sched_getscheduler(tid) != policy:
                        os.sched_setscheduler(tid, policy, os.sched_param(0))
                        changed = True
            if not changed:
                break
    except (PermissionError, ProcessLookupError):
        return False
    return _set_nice(proc, nice)


def _set_nice(proc: Child, nice: int) -> bool:
    try:
        os.setpriority(os.PRIO_PGRP, proc.pid, max(0, min(19, nice)))
        return True
    except (PermissionError, ProcessLookupError):
        return False


def _group_threads(pgid: int) -> list[int]:
    """The thread ids of every process in process group `pgid` (from /proc)."""
    tids: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                # pid (comm) state ppid pgrp ...: the comm may hold spaces and parentheses.
                fields = f.read().rsplit(b")", 1)[1].split()
            if int(fields[2]) == pgid:
                tids += [int(t) for t in os.listdir(f"/proc/{entry.name}/task")]
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    return tids


@cache
def can_move_up() -> bool:
    """Whether this process may move a child out of the background again (SCHED_IDLE
    back to normal at vidd's own nice value): as root, with CAP_SYS_NICE, or with a
    high enough RLIMIT_NICE (systemd's LimitNICE=+0). Asked of the kernel itself, with
    a throwaway thread."""
    answer = [False]

    def probe() -> None:
        tid = threading.get_native_id()
        try:
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
            os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
            answer[0] = True
        except OSError:
            pass

    thread = threading.Thread(target=probe, name="can-move-up")
    thread.start()
    thread.join()
    return answer[0]


async def stop(proc: Child, grace_s: float) -> int:
    """SIGTERM the group, SIGKILL it after `grace_s`, and reap. Returns the exit code."""
    if proc.returncode is None:
        proc.signal_group(signal.SIGTERM)
        try:
            await timeouts.wait_for(asyncio.shield(proc.wait()), grace_s)
        except TimeoutError:
            pass
    # Kill the whole group even when the leader is gone: a grandchild may linger.
    proc.signal_group(signal.SIGKILL)
    code = await proc.wait()
    proc.close_pipes()
    return code


def kill_now(proc: Child) -> None:
    """For a forced exit: SIGKILL the group without waiting."""
    proc.signal_group(signal.SIGKILL)


async def run(
    args: Sequence[str],
    *,
    timeout_s: float,
    grace_s: float = 2.0,
    nice: int = 0,
    max_output: int = MAX_OUTPUT,
    box: Box | None = None,
) -> tuple[int, str, str]:
    """Run a short command to completion; returns (exit code, stdout, stderr).

    At most `max_output` bytes of each stream are kept (the start of stdout, where the
    JSON is; the end of stderr, where the reason is), whatever a hostile input makes the
    child print. On timeout or cancellation the process group is stopped and reaped.
    Raises TimeoutError on timeout.
    """
    proc = await spawn(args, nice=nice, box=box)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        out, err, _ = await timeouts.wait_for(
            asyncio.gather(
                _read_capped(proc.stdout, max_output, keep_end=False),
                _read_capped(proc.stderr, max_output, keep_end=True),
                proc.wait(),
            ),
            timeout_s,
        )
    except BaseException:
        await asyncio.shield(stop(proc, grace_s))
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


async def _read_capped(stream: asyncio.StreamReader, cap: int, *, keep_end: bool) -> bytes:
    data = bytearray()
    while chunk := await stream.read(64 << 10):
        if keep_end:
            data += chunk
            del data[:-cap]
        elif len(data) < cap:
            data += chunk[: cap - len(data)]
    return bytes(data)
