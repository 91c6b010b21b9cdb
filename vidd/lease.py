"""The write-lease check: asks Linux whether any process still holds a file open for writing.

A read lease (`F_SETLEASE`, `F_RDLCK`) is refused with EAGAIN while the file has a
writer, so taking one and dropping it at once answers the question without polling sizes.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import signal
from pathlib import Path


def has_writer(path: Path) -> bool | None:
    """True while some process has `path` open for writing, False when none has.

    None when Linux can't tell us: we don't own the file and lack CAP_LEASE, the
    filesystem has no leases (NFS, many FUSE mounts), leases are disabled, or no
    SIGIO handler is installed (see `ignore_lease_breaks`). Raises FileNotFoundError
    when the file is gone. Never follows a symlink.
    """
    if signal.getsignal(signal.SIGIO) in (signal.SIG_DFL, None):
        # A writer opening the file while we hold the lease makes the kernel send us
        # SIGIO, whose default action kills the process: better not to know.
        return None
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:  # an OSError, but the caller must hear that it is gone
        raise
    except BlockingIOError:
        # Someone else holds a write lease (a file server mid-transfer): our open
        # starts the break, and we ask again on the next check.
        return True
    except OSError:
        return None
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except BlockingIOError:
        return True
    except OSError as e:
        if e.errno == errno.EAGAIN:  # pragma: no cover - BlockingIOError covers it on Linux
            return True
        return None
    else:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return False
    finally:
        os.close(fd)


def _lease_broken() -> None:
    """SIGIO arrives when a writer opens a file during our brief lease; nothing to do."""


def ignore_lease_breaks(loop: asyncio.AbstractEventLoop) -> None:
    """Install a no-op SIGIO handler on `loop`, so a lease break can't kill vidd.

    Unlike SIG_IGN, a handled signal is reset to its default in exec'd children, so
    HandBrakeCLI keeps the usual SIGIO behaviour.
    """
    loop.add_signal_handler(signal.SIGIO, _lease_broken)
