"""The disk guard: how much space is free where vidd writes, against the configured floor.

One guard for the whole daemon: bytes promised to writes still in flight (an upload's
declared length, a copy being made) count as used, so parallel writers can't each see
the same free space and together go below the floor.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from .config import Storage


class DiskFull(Exception):
    """Free space is below `storage.min_free_bytes`."""


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _words(free: int, floor: int) -> str:
    return (
        f"only {max(0, free) // (1 << 20)} MiB free on the data disk; "
        f"vidd keeps at least {floor // (1 << 20)} MiB free"
    )


class Reservation:
    """Space promised to one write; it shrinks as the bytes land on the disk."""

    def __init__(self, guard: DiskGuard, size: int) -> None:
        self.guard = guard
        self.remaining = size

    def wrote(self, n: int) -> None:
        """`n` bytes are on the disk now: they show in free space, not in the promise.
        Past the promise (an undeclared size), each new byte is checked first."""
        beyond = n - self.remaining
        if beyond > 0:
            self.guard.check(beyond)
        taken = min(n, self.remaining)
        self.remaining -= taken
        self.guard.reserved -= taken

    def unwrote(self, n: int) -> None:
        """`n` written bytes were taken off the disk to be written again: promised again."""
        self.remaining += n
        self.guard.reserved += n

    def release(self) -> None:
        """Give back what is left of the promise (a promise that outlived one call)."""
        self.guard.reserved -= self.remaining
        self.remaining = 0


class DiskGuard:
    def __init__(self, path: Path, min_free_bytes: int) -> None:
        self.path = path
        self.min_free_bytes = min_free_bytes
        self.reserved = 0  # bytes promised to writes in flight

    @classmethod
    def of(cls, storage: Storage) -> DiskGuard:
        """The guard for a config's data disk and floor."""
        return cls(storage.data_dir, storage.min_free_bytes)

    def __repr__(self) -> str:
        return f"<DiskGuard {self.path} floor={self.min_free_bytes} reserved={self.reserved}>"

    def free(self) -> int:
        """Free bytes, less what writes in flight have been promised."""
        return free_bytes(self.path) - self.reserved

    def check(self, incoming: int = 0) -> None:
        free = self.free()
        if free - incoming < self.min_free_bytes:
            raise DiskFull(_words(free, self.min_free_bytes))

    @contextlib.contextmanager
    def reserve(self, size: int) -> Iterator[Reservation]:
        """Promise `size` bytes to a write (DiskFull if that would cross the floor);
        what the write did not use is given back at the end."""
        reservation = self.promise(size)
        try:
            yield reservation
        finally:
            reservation.release()

    def promise(self, size: int, *, checked: bool = True) -> Reservation:
        """`reserve` for a write that spans many calls (a resumable upload): the caller
        ends it with `Reservation.release`. Unchecked when re-made at start-up: bytes
        promised before a restart are not refused after it."""
        if checked:
            self.check(size)
        self.reserved += size
        return Reservation(self, size)
