"""The disk guard: how much space is free where vidd writes, against the configured floor."""

from __future__ import annotations

import os
from pathlib import Path


class DiskFull(Exception):
    """Free space is below `storage.min_free_bytes`."""


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def check(path: Path, min_free_bytes: int, incoming: int = 0) -> None:
    """Raise DiskFull if writing `incoming` more bytes would leave less than the floor."""
    free = free_bytes(path)
    if free - incoming < min_free_bytes:
        raise DiskFull(
            f"only {free // (1 << 20)} MiB free on the data disk; "
            f"vidd keeps at least {min_free_bytes // (1 << 20)} MiB free"
        )
