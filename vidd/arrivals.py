"""Which inbox files arrived whole: renamed into the inbox (the kernel's IN_MOVED_TO) and
not written there since.

watchfiles reports a rename into the inbox and a file created and written there within
its step alike, as one "added" event, so the watcher could only tell a whole arrival by
an mtime older than its quiet time. A file written elsewhere and renamed in at once, as
a tool that writes atomically does, then waited that quiet time for nothing: the lease
check already shows that no one still writes it. This asks inotify itself, for the top
folder of the inbox only (files in subfolders keep the mtime rule).

Anything that is not a plain rename in (a create, a write, a close after writing, a
rename or delete away) forgets the name; so does a queue overflow (all of them), so a
doubt always falls back to the quiet time.
"""

from __future__ import annotations

import ctypes
import logging
import os
import struct
from collections import OrderedDict
from pathlib import Path

log = logging.getLogger(__name__)

IN_MODIFY = 0x002
IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
WATCHED = IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
EVENT = struct.Struct("iIII")  # wd, mask, cookie, length of the name that follows
READ_BYTES = 64 << 10
MAX_NAMES = 10_000  # names remembered at most (the oldest go first)


class Arrivals:
    """The names renamed into `folder` and not written since, from an inotify watch of
        its own. `open` it; `catch_up()` takes in what the kernel has queued, and then
    `whole(path)` answers."""

    def __init__(self, folder: Path, max_names: int = MAX_NAMES) -> None:
        self.folder = folder
        self.max_names = max_names
        self._fd = -1
        self._names: OrderedDict[str, None] = OrderedDict()

    def __repr__(self) -> str:
        return f"<Arrivals {self.folder} open={self._fd >= 0} names={len(self._names)}>"

    def open(self) -> bool:
        """Start watching. False (logged) where inotify can't be had: every answer is
        then no, and the watcher's mtime rule decides alone."""
        self.close()
        libc = ctypes.CDLL(None, use_errno=True)
        fd = int(libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
        if fd < 0:
            log.warning("arrivals: no inotify (%s)", os.strerror(ctypes.get_errno()))
            return False
        wd = libc.inotify_add_watch(fd, os.fsencode(self.folder), WATCHED | IN_ONLYDIR)
        if wd < 0:
            log.warning(
                "arrivals: can't watch %s (%s)", self.folder, os.strerror(ctypes.get_errno())
            )
            os.close(fd)
            return False
        self._fd = fd
        return True

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._names.clear()

    def whole(self, path: Path) -> bool:
        """Whether `path` was renamed into the folder and not written since (as of the
        last catch_up)."""
        return path.parent == self.folder and path.name in self._names

    def catch_up(self) -> None:
        """Take in the events the kernel has queued (never blocks)."""
        while self._fd >= 0:
            try:
                data = os.read(self._fd, READ_BYTES)
            except BlockingIOError:
                return
            except OSError as e:
                log.warning("arrivals: reading inotify failed (%s); stopped", e)
                self.close()
                return
            self._take(data)

    def _take(self, data: bytes) -> None:
        offset = 0
        while offset + EVENT.size <= len(data):
            _, mask, _, length = EVENT.unpack_from(data, offset)
            raw = data[offset + EVENT.size : offset + EVENT.size + length]
            offset += EVENT.size + length
            if mask & (IN_Q_OVERFLOW | IN_IGNORED):
                self._names.clear()  # events were lost, or the folder is gone: doubt all
                continue
            name = os.fsdecode(raw.rstrip(b"\0"))
            if not name:
                continue
            self._names.pop(name, None)
            if mask & IN_MOVED_TO:
                self._names[name] = None
                if len(self._names) > self.max_names:
                    self._names.popitem(last=False)
