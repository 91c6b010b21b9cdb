"""Publishing: each finished result is also placed in `storage.output_dir` under the name
its file came with (`holiday.mov` -> `holiday.mp4`), its inbox subfolder mirrored.

Never over another file ("holiday (2).mp4"), and atomically: the name appears complete or
not at all. On the data folder's filesystem the result is a hard link to videos/<id>.mp4;
elsewhere a copy is written and fsynced under a temporary name in the same folder, then
linked to its name. Linking (unlike rename) refuses an existing name, which is what makes
"never overwrite" safe against a file that appears meanwhile.

Every path is built from cleaned names (names.py), one component at a time from an open
descriptor of the output folder, never following a symlink: the result lands inside
output_dir whatever the names or the folder holds. The job is marked `publish_pending`
in the same write that makes it done, so a crash in between is finished at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import names
from .config import Config
from .job import Job
from .layout import Layout
from .store import Store

log = logging.getLogger(__name__)

MAX_NUMBER = 1000  # "holiday (1000).mp4" is the last try: past that a folder is a mess
COPY_CHUNK = 1 << 20
# At a stop: a hard link takes no time, and a long copy is abandoned (it stays pending and
# the next start finishes it), so the stop stays inside shutdown.py's stages.
STOP_GRACE_S = 1.0
# Errors of a hard link that mean "this filesystem pair can't": copy instead.
NO_LINK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP}
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class Taken(Exception):
    """Every numbered name up to MAX_NUMBER is taken."""


@dataclass(frozen=True)
class Placed:
    path: str  # relative to output_dir, "/"-separated
    number: int  # 1 for the name itself, 2 for "name (2).mp4"...
    how: str  # "hard link", "copy", or "already there"


def place(
    video: Path,
    root: Path,
    folder: list[str],
    name: str,
    *,
    temp_name: str,
    recovering: bool = False,
    abort: threading.Event | None = None,
) -> Placed:
    """Put `video` at root/folder/name, or its first free numbered variant. `folder` and
    `name` must be cleaned components. With `recovering`, an identical file already at
    one of the names is taken as this result's own (a crash after it was written)."""
    video_st = os.stat(video)
    fds: list[int] = [os.open(root, DIR_FLAGS)]
    try:
        for part in folder:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=fds[-1])
            # O_NOFOLLOW: a symlink planted in output_dir can't lead the result out of it.
            fds.append(os.open(part, DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fds[-1]))
        return _place_in(fds[-1], video, video_st, folder, name, temp_name, recovering, abort)
    finally:
        for fd in fds:
            os.close(fd)


def _place_in(
    fd: int,
    video: Path,
    video_st: os.stat_result,
    folder: list[str],
    name: str,
    temp_name: str,
    recovering: bool,
    abort: threading.Event | None,
) -> Placed:
    copied = False  # the temporary copy, once written
    with contextlib.suppress(FileNotFoundError):  # left by a crash mid-copy
        os.unlink(temp_name, dir_fd=fd)
    try:
        for n in range(1, MAX_NUMBER + 1):
            candidate = names.numbered(name, n)
            try:
                st = os.stat(candidate, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                st = None
            if st is not None:
                if _same(fd, candidate, st, video, video_st, recovering):
                    return Placed("/".join([*folder, candidate]), n, "already there")
                continue
            try:
                if copied:
                    os.link(temp_name, candidate, src_dir_fd=fd, dst_dir_fd=fd)
                    how = "copy"
                else:
                    os.link(video, candidate, dst_dir_fd=fd, follow_symlinks=False)
                    how = "hard link"
            except FileExistsError:
                continue  # appeared since the stat: the next number
            except OSError as e:
                if e.errno not in NO_LINK or copied:
                    raise
                _copy(video, fd, temp_name, abort)
                copied = True
                try:
                    os.link(temp_name, candidate, src_dir_fd=fd, dst_dir_fd=fd)
                except FileExistsError:
                    continue
                how = "copy"
            os.fsync(fd)  # the new name is durable before the store hears of it
            return Placed("/".join([*folder, candidate]), n, how)
        raise Taken(f"{names.numbered(name, MAX_NUMBER)} and every name before it are taken")
    finally:
        if copied:
            with contextlib.suppress(OSError):
                os.unlink(temp_name, dir_fd=fd)


def _same(
    fd: int,
    name: str,
    st: os.stat_result,
    video: Path,
    video_st: os.stat_result,
    recovering: bool,
) -> bool:
    """Whether the file at `name` is this result: the same inode (a hard link), or, while
    recovering, the same bytes (a copy whose record a crash cut off)."""
    if (st.st_dev, st.st_ino) == (video_st.st_dev, video_st.st_ino):
        return True
    if not recovering or st.st_size != video_st.st_size or not os.path.isfile(video):
        return False
    try:
        src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
    except OSError:
        return False
    with open(src, "rb") as a, open(video, "rb") as b:
        while True:
            x, y = a.read(COPY_CHUNK), b.read(COPY_CHUNK)
            if x != y:
                return False
            if not x:
                return True


def _copy(video: Path, fd: int, temp_name: str, abort: threading.Event | None) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    out = os.open(temp_name, flags, 0o644, dir_fd=fd)
    try:
        with open(video, "rb") as fin, open(out, "wb", closefd=False) as fout:
            while chunk := fin.read(COPY_CHUNK):
                if abort is not None and abort.is_set():
                    raise InterruptedError("copy abandoned")
                fout.write(chunk)
            fout.flush()
            os.fsync(out)
    except BaseException:
        os.close(out)
        with contextlib.suppress(OSError):
            os.unlink(temp_name, dir_fd=fd)
        raise
    os.close(out)


def note_for(placed: Placed, name: str) -> str | None:
    """The plain sentence a person reads when the result did not get its own name."""
    if placed.number <= 1:
        return None
    return f"Saved as “{Path(placed.path).name}” because “{name}” was already there."


class Publisher:
    """Publishes results in the background: `later(job_id)` after a job is done,
    `recover()` at start-up for the ones a crash cut off."""

    def __init__(self, config: Config, store: Store, layout: Layout) -> None:
        self.output_dir = config.storage.output_dir
        self.store = store
        self.layout = layout
        self._tasks: set[asyncio.Task[None]] = set()
        self._abort = threading.Event()
        # One at a time, in the order jobs finished: the first done gets the plain name.
        self._one_at_a_time = asyncio.Lock()
        self.published = 0
        self.failed = 0

    def __repr__(self) -> str:
        return f"<Publisher {self.output_dir} published={self.published} failed={self.failed}>"

    @property
    def enabled(self) -> bool:
        return self.output_dir is not None

    def later(self, job_id: str) -> None:
        """Publish a done job's result soon (its record says it is pending)."""
        if not self.enabled:
            return
        self._spawn(self._publish_id(job_id), job_id)

    async def recover(self) -> int:
        """At start-up: publish what a crash left pending. Returns how many."""
        if self.enabled:
            log.info("publish: each result is also saved in %s by its own name", self.output_dir)
        pending = await self.store.publish_pending()
        for job in pending:
            if not self.enabled:  # output_dir was turned off since: nothing to do
                await self.store.published(job.id, None, None)
                continue
            log.warning("publish: %s: finishing a publication cut short (%r)", job.id, job.name)
            self._spawn(self._publish(job, recovering=True), job.id)
        return len(pending)

    def _spawn(self, publishing: Coroutine[Any, Any, None], job_id: str) -> None:
        task = asyncio.create_task(publishing, name=f"publish-{job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish_id(self, job_id: str) -> None:
        job = await self.store.get(job_id)
        if job is not None:
            await self._publish(job, recovering=False)

    async def _publish(self, job: Job, *, recovering: bool) -> None:
        """Place the result and record where; a failure is recorded as a note, not raised."""
        assert self.output_dir is not None
        name = names.result_name(job.name)
        folder = names.folder_parts(job.folder)
        try:
            async with self._one_at_a_time:
                placed = await asyncio.to_thread(
                    place,
                    self.layout.video(job.id),
                    self.output_dir,
                    folder,
                    name,
                    temp_name=f".vidd-{job.id}.partial",
                    recovering=recovering,
                    abort=self._abort,
                )
        except (OSError, Taken) as e:
            self.failed += 1
            why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            note = f"The result could not be saved to the output folder: {why}."
            log.warning("job %s: not published to %s: %s", job.id, self.output_dir, why)
            await self._record(job, None, note)
            return
        self.published += 1
        log.info(
            "job %s: published as %s (%s)%s",
            job.id, placed.path, placed.how,
            f", {name} was taken" if placed.number > 1 else "",
        )  # fmt: skip
        await self._record(job, placed.path, note_for(placed, name))

    async def _record(self, job: Job, published_as: str | None, note: str | None) -> None:
        try:
            await self.store.published(job.id, published_as, note)
        except KeyError:
            log.info("job %s: deleted while it was being published", job.id)
        except Exception as e:  # still pending: the next start publishes it again
            log.warning("job %s: publication not recorded (%s); next start retries", job.id, e)

    async def stop(self, timeout_s: float = STOP_GRACE_S) -> None:
        """Let publications finish for `timeout_s`, then abandon the rest: they stay
        pending and the next start finishes them."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
        self._abort.set()
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
