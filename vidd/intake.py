"""Intake: the one way in. A file from the inbox or an upload is claimed into sources/,
probed, and recorded as a queued job, or as a rejected one with the reason.

Nothing is lost on the way: until the job is stored, any failure puts the file back
where it came from.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
import stat
import threading
import unicodedata
from pathlib import Path
from typing import Literal

from . import disk, probe
from .config import Config
from .job import Job, JobError, MediaInfo, Status, new_id, now
from .store import Store

log = logging.getLogger(__name__)

Origin = Literal["inbox", "upload"]

MAX_NAME_CHARS = 255
# Categories dropped from display names: controls, format characters (bidi overrides
# can make "gpj.exe" look like "exe.jpg"), and lone surrogates from undecodable bytes.
DROPPED_CATEGORIES = {"Cc", "Cf", "Cs"}
SAFE_EXT = re.compile(r"\.[a-z0-9]{1,8}")
COPY_CHUNK = 1 << 20


def clean_name(name: str, max_chars: int = MAX_NAME_CHARS) -> str:
    """A file name fit for display: valid UTF-8, no control characters, at most
    `max_chars` long, its extension kept when it has to be cut."""
    name = name[: max_chars * 4]  # bound the work on hostile input
    # Undecodable bytes arrive as surrogate escapes (os.fsdecode); SQLite and JSON
    # need real text, so they become U+FFFD.
    name = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    name = "".join(c for c in name if unicodedata.category(c) not in DROPPED_CATEGORIES)
    name = name.strip()
    if len(name) > max_chars:
        stem, dot, ext = name.rpartition(".")
        keep_ext = dot and 0 < len(ext) <= 10
        name = stem[: max_chars - len(ext) - 1] + "." + ext if keep_ext else name[:max_chars]
    return name or "untitled"


def safe_ext(name: str) -> str:
    """The name's extension, lowercased, if it is short and plain (".mkv"); else ""."""
    ext = os.path.splitext(name)[1].lower()
    return ext if SAFE_EXT.fullmatch(ext) else ""


class Intake:
    def __init__(self, config: Config, store: Store) -> None:
        self.config = config
        self.store = store
        self._tasks: set[asyncio.Task[Job]] = set()
        self.admitted = 0
        self.rejected = 0

    def __repr__(self) -> str:
        return f"<Intake admitted={self.admitted} rejected={self.rejected}>"

    async def admit(
        self,
        path: Path,
        origin: Origin,
        *,
        name: str | None = None,
        profile: str | None = None,
    ) -> Job:
        """Claim `path`, probe it and store a job (queued, or rejected if not a video).

        Raises ValueError for an unknown profile or a path that is not a regular file
        (the file is left untouched), OSError if the file can't be claimed, DiskFull if
        claiming it means a copy the disk guard forbids. Once
        started, an admission runs to its end even if the caller is cancelled, so a
        claimed file always ends up with a job or back where it was.
        """
        profile = profile if profile is not None else self.config.encode.default_profile
        if profile not in self.config.encode.profiles:
            raise ValueError(f"unknown profile {profile!r}")
        display = clean_name(name if name is not None else path.name)
        task = asyncio.ensure_future(self._admit(path, origin, display, profile))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                task.add_done_callback(_log_orphan)
            raise

    async def _admit(self, path: Path, origin: Origin, name: str, profile: str) -> Job:
        storage = self.config.storage
        job_id = new_id()
        ext = safe_ext(name)
        claimed = storage.sources_dir / f"{job_id}{ext}"
        storage.sources_dir.mkdir(parents=True, exist_ok=True)
        await _move(path, claimed, min_free=storage.min_free_bytes)
        where = claimed
        try:
            # Checked after the move, on what was moved: the name may have been
            # swapped for a symlink since the watcher looked at it.
            if not stat.S_ISREG(claimed.lstat().st_mode):
                raise ValueError(f"{name!r} is not a regular file")
            try:
                info: MediaInfo | None = await probe.probe(self.config.encode.handbrake, claimed)
                reason = ""
            except probe.NotAVideo as e:
                info, reason = None, str(e) or "not a video"
            if info is None and origin == "inbox":
                storage.rejected_dir.mkdir(parents=True, exist_ok=True)
                where = storage.rejected_dir / claimed.name
                await _move(claimed, where)
            created = now()
            job = Job(
                id=job_id,
                name=name,
                status=Status.QUEUED if info else Status.REJECTED,
                profile=profile,
                origin=origin,
                source_ext=ext,
                created_at=created,
                finished_at=None if info else created,
                source=info,
                error=None if info else JobError("not_video", reason),
            )
            job = await self.store.add(job)
        except BaseException:
            await _put_back(where, path)
            raise
        if info is None:
            self.rejected += 1
            if origin == "upload":
                # The user still has the file; keeping it would only fill the disk.
                where.unlink(missing_ok=True)
            log.info("intake: %s rejected (%s, %r): %s", job_id, origin, name, reason)
        else:
            self.admitted += 1
            log.info(
                "intake: %s queued (%s, %r, %.1f s %dx%d %s)",
                job_id, origin, name, info.duration, info.width, info.height, info.video_codec,
            )  # fmt: skip
        return job


async def _move(src: Path, dst: Path, *, min_free: int = 0) -> None:
    """Rename `src` to `dst`; across filesystems, copy, fsync, then unlink.

    A copy must leave `min_free` bytes free (else DiskFull). On any failure `src` is
    left as it was.
    """
    try:
        os.rename(src, dst)
        return
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
    disk.check(dst.parent, min_free, os.lstat(src).st_size)
    tmp = dst.with_name(f".{dst.name}.partial")
    abort = threading.Event()
    try:
        await asyncio.to_thread(_copy, src, tmp, abort)
    except BaseException:
        abort.set()  # if we were cancelled, the copying thread removes its own file
        raise
    try:
        os.rename(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:
        os.unlink(src)
    except FileNotFoundError:
        pass
    except BaseException:
        dst.unlink(missing_ok=True)  # src is still whole: keep one copy, the original
        raise


def _copy(src: Path, tmp: Path, abort: threading.Event) -> None:
    """Copy `src` to a new file `tmp` durably, keeping its times; remove `tmp` on failure."""
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        with open(fd, "rb", closefd=False) as fin, open(tmp, "xb") as fout:
            try:
                while chunk := fin.read(COPY_CHUNK):
                    if abort.is_set():
                        raise InterruptedError("copy abandoned")
                    fout.write(chunk)
                fout.flush()
                os.fsync(fout.fileno())
                st = os.fstat(fd)
                os.utime(fout.fileno(), ns=(st.st_atime_ns, st.st_mtime_ns))
                if abort.is_set():
                    raise InterruptedError("copy abandoned")
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
    finally:
        os.close(fd)


async def _put_back(current: Path, original: Path) -> None:
    """Return a claimed file to where it came from, never over another file."""
    try:
        if current == original or not os.path.lexists(current):
            return
        if os.path.lexists(original):
            log.error("intake: %s stays at %s: %s is taken", original.name, current, original)
            return
        await _move(current, original)
    except Exception:
        log.exception("intake: could not put %s back to %s", current, original)


def _log_orphan(task: asyncio.Task[Job]) -> None:
    if not task.cancelled() and (e := task.exception()) is not None:
        log.error("intake: admission failed after its caller left: %r", e)
