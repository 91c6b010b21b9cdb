"""Intake: the one way in. A file from the inbox or an upload is claimed into sources/,
probed, and recorded as a queued job, or as a rejected one with the reason. An inbox
file that finds a slot free is queued unprobed instead (`scan_in_encode`): its encode
scans it anyway, and `reject_scanned` records the rejection if that scan finds it is
not a video.

Nothing is lost on the way: the job's record exists (as `admitting`) before the file
moves; a failure puts the file back and removes the record, and after a crash
`recover` finishes or rolls back what was cut short.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import filecmp
import logging
import os
import re
import stat
import threading
import time
import unicodedata
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Literal

from . import children, disk, probe
from .config import Config
from .job import Job, MediaInfo, Status, new_id, now
from .layout import Layout, remove
from .store import Store

log = logging.getLogger(__name__)

Origin = Literal["inbox", "upload"]

MAX_NAME_CHARS = 255
# Categories dropped from display names: controls, format characters (bidi overrides
# can make "gpj.exe" look like "exe.jpg"), and lone surrogates from undecodable bytes.
DROPPED_CATEGORIES = {"Cc", "Cf", "Cs"}
SAFE_EXT = re.compile(r"\.[a-z0-9]{1,8}")
COPY_CHUNK = 1 << 20
# The probe of an inbox file that waits for a slot: nobody waits on its answer, and at
# nice 0 it outweighed the first encode (nice 5, pool.ENCODE_NICE) threefold. Not in the
# background like the encodes behind the first: starved there, it could outlast its
# timeout and get a video rejected.
WAITING_PROBE_NICE = 10


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


class QueueFull(Exception):
    """`encode.max_queued` jobs wait already: a passing refusal, try again later."""


class Intake:
    def __init__(
        self,
        config: Config,
        store: Store,
        layout: Layout,
        guard: disk.DiskGuard | None = None,
        *,
        scan_in_encode: bool = False,
    ) -> None:
        self.config = config
        # An inbox file that finds a slot free is queued unprobed: its encode starts at
        # once and scans it anyway (a rejection then comes from the pool, reject_scanned).
        self.scan_in_encode = scan_in_encode
        self.store = store
        self.layout = layout
        self.guard = guard or disk.DiskGuard.of(config.storage)
        # HandBrake scans at once, whatever arrives: about one per core.
        self._probes = asyncio.Semaphore(max(1, os.cpu_count() or 1))
        self._tasks: set[asyncio.Task[Job | None]] = set()
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
        folder: str = "",
    ) -> Job:
        """Claim `path`, probe it and store a job (queued, or rejected if not a video).

        The job's record (state `admitting`) is written before the file moves, so a
        crash at any point leaves either the file where it was or a record that the
        next start finishes (`recover`). Raises ValueError for an unknown profile or a
        path that is not a regular file (the file is left untouched), OSError if the
        file can't be claimed, DiskFull when the disk guard forbids taking it. Once
        started, an admission runs to its end even if the caller is cancelled.
        """
        profile = profile if profile is not None else self.config.encode.default_profile
        if profile not in self.config.encode.profiles:
            raise ValueError(f"unknown profile {profile!r}")
        display = clean_name(name if name is not None else path.name)
        where = "/".join(clean_name(part) for part in folder.split("/") if part)
        await self.check_room()
        return await self._shielded(self._admit(path, origin, display, profile, where))

    async def check_room(self) -> None:
        """Raise QueueFull when the queue holds `encode.max_queued` jobs."""
        counts = await self.store.counts()
        waiting = counts.get("queued", 0) + counts.get("admitting", 0)
        if waiting >= self.config.encode.max_queued:
            raise QueueFull(
                f"{waiting} jobs wait already (encode.max_queued); try again when some are done"
            )

    async def _shielded(self, coro: Coroutine[Any, Any, Job]) -> Job:
        task = asyncio.ensure_future(coro)
        self._track(task)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                task.add_done_callback(_log_orphan)
            raise

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _admit(
        self, path: Path, origin: Origin, name: str, profile: str, folder: str = ""
    ) -> Job:
        if origin == "inbox":  # an upload is on the disk already: claiming it is a rename
            self.guard.check()
        if not stat.S_ISREG(path.lstat().st_mode):
            raise ValueError(f"{name!r} is not a regular file")
        job = Job(
            id=new_id(),
            name=name,
            status=Status.ADMITTING,
            profile=profile,
            origin=origin,
            source_ext=safe_ext(name),
            created_at=now(),
            folder=folder,
        )
        job = await self.store.add(job, intake_path=path)  # the write-ahead record
        claimed = self.layout.source(job)
        try:
            claimed.parent.mkdir(parents=True, exist_ok=True)
            await _move(path, claimed, self.guard)
        except BaseException:
            await self._abandon(job)  # the file never left
            raise
        return await self._settle(job, claimed, back_to=path)

    async def _settle(self, job: Job, claimed: Path, *, back_to: Path | None) -> Job:
        """Probe a claimed file and end its admission: queued, or rejected.

        On a failure the file goes back to `back_to` and the record is removed; with no
        `back_to` (a recovery) both stay as they are for the next start.
        """
        try:
            # Checked after the move, on what was moved: the name may have been
            # swapped for a symlink since the watcher looked at it.
            if not stat.S_ISREG(claimed.lstat().st_mode):
                raise ValueError(f"{job.name!r} is not a regular file")
            try:
                nice = await self._probe_nice(job)
                if nice is None:
                    job = await self.store.admitted(job.id, None)
                else:
                    async with self._probes:
                        started = time.monotonic()
                        info = await self._probe(job, claimed, nice)
                        log.debug("intake: %s probed in %.3f s", job.id, time.monotonic() - started)
                    job = await self.store.admitted(job.id, info)
            except probe.NotAVideo as e:
                kept = self.layout.rejected_name(job) if job.origin == "inbox" else None
                job = await self.store.reject(job.id, str(e) or "not a video", rejected_as=kept)
        except BaseException:
            # A cancel (the shutdown's last stage) can land after the store took the new
            # state but before its answer came back: then the job owns the file, and
            # putting it back would have the watcher take it a second time.
            if (
                back_to is not None
                and await self._still_admitting(job)
                and await _put_back(claimed, back_to)
            ):
                await self._abandon(job)
            raise
        if job.status is Status.REJECTED:
            self.rejected += 1
            self._put_aside(job, claimed)
            reason = job.error.message if job.error else ""
            kept = f", kept as rejected/{job.rejected_as}" if job.rejected_as else ""
            log.info(
                "intake: %s rejected (%s, %r%s): %s", job.id, job.origin, job.name, kept, reason
            )
        elif job.source is None:
            self.admitted += 1
            log.info(
                "intake: %s queued (%s, %r%s, unprobed: its encode scans it)",
                job.id, job.origin, job.name, f" from {job.folder}/" if job.folder else "",
            )  # fmt: skip
        else:
            self.admitted += 1
            info = job.source
            log.info(
                "intake: %s queued (%s, %r%s, %.1f s %dx%d %s)",
                job.id, job.origin, job.name, f" from {job.folder}/" if job.folder else "",
                info.duration, info.width, info.height, info.video_codec,
            )  # fmt: skip
        return job

    async def _probe_nice(self, job: Job) -> int | None:
        """None to queue this file unprobed: an inbox file (an upload's 201/422 answer
        needs the probe), for a profile that doesn't repackage (that choice needs the
        codecs first), with a slot free for it now, so that its encode starts at once
        and scans the file itself. Else the nice value to probe it at: an inbox file
        that waits for a slot anyway is probed below the encodes running meanwhile."""
        if not self.scan_in_encode or job.origin != "inbox":
            return 0
        profile = self.config.encode.profiles.get(job.profile)
        if profile is None or profile.repackage:
            return 0
        # Admissions in flight are not counted: which of them is queued first is not known
        # yet, and counting them would have each probe for the others' sake. At worst a
        # few (the watcher admits two at once) wait unprobed, to be scanned when they run.
        counts = await self.store.counts()
        ahead = counts.get("running", 0) + counts.get("queued", 0)
        return None if ahead < self.config.encode.max_parallel else WAITING_PROBE_NICE

    async def _probe(self, job: Job, claimed: Path, nice: int = 0) -> MediaInfo:
        """HandBrake's scan, in a box that may read only this file."""
        work = self.layout.work(job.id)
        work.mkdir(parents=True, exist_ok=True)
        box = children.Box(
            home=work, reads=(claimed.resolve(),), pass_env=self.config.encode.child_env
        )
        try:
            return await probe.probe(self.config.encode.handbrake, claimed, box, nice=nice)
        finally:
            remove(work)

    def _put_aside(self, job: Job, claimed: Path) -> None:
        put_aside(self.layout, job, claimed)

    async def _still_admitting(self, job: Job) -> bool:
        """Whether the job's record is still an admission (or gone). When the store can't
        say, as if it were: the file goes back, and the next start removes the record."""
        try:
            current = await asyncio.shield(self.store.get(job.id))
        except Exception:
            return True
        return current is None or current.status is Status.ADMITTING

    async def _abandon(self, job: Job) -> None:
        try:
            await asyncio.shield(self.store.abandon_admission(job.id))
        except Exception as e:  # the next start removes it: its file is back in place
            log.warning("intake: %s: could not remove its admission record: %s", job.id, e)

    # --- after a crash -----------------------------------------------------------

    async def recover(self) -> int:
        """At start-up, before the watcher and before tmp/ is cleared: finish or roll
        back every admission a crash cut short, and adopt files in sources/ that have
        no job. Probing runs in the background; returns how many files were touched."""
        touched = 0
        for job, intake_path in await self.store.admissions():
            touched += 1
            claimed = self.layout.source(job)
            came_back = intake_path is not None and intake_path.is_file()
            if claimed.exists():
                if came_back and job.origin == "inbox" and await _same_file(claimed, intake_path):
                    # A copy across filesystems that ended before its unlink.
                    assert intake_path is not None
                    intake_path.unlink()
                log.warning("intake: %s: finishing an admission cut short (%r)", job.id, job.name)
                self._resume(job, claimed)
            elif came_back and job.origin == "upload":
                assert intake_path is not None
                await _move(intake_path, claimed)
                log.warning("intake: %s: finishing an upload's admission (%r)", job.id, job.name)
                self._resume(job, claimed)
            else:
                await self.store.abandon_admission(job.id)
                if came_back:
                    log.info("intake: %s: rolled back; %r waits in the inbox", job.id, job.name)
                else:
                    log.warning(
                        "intake: %s: an admission of %r had no file left (an upload cut off "
                        "before it was answered); record removed",
                        job.id, job.name,
                    )  # fmt: skip
        touched += await self._sort_sources()
        return touched

    async def _sort_sources(self) -> int:
        """Every file in sources/ belongs to a job that still needs it."""
        statuses = await self.store.statuses()
        touched = 0
        for entry in sorted(self.layout.sources.iterdir()):
            if entry.name.startswith("."):  # a copy cut short; its original is intact
                entry.unlink(missing_ok=True)
                touched += 1
                continue
            job_id = entry.name.split(".", 1)[0]
            status = statuses.get(job_id)
            if status is None:
                touched += 1
                log.warning("intake: %s in sources/ has no job: adopting it", entry.name)
                self._track(asyncio.ensure_future(self._adopt(entry)))
                continue
            if status is Status.REJECTED:
                touched += 1
                job = await self.store.get(job_id)
                if job is not None:
                    self._put_aside(job, entry)
        return touched

    async def _adopt(self, path: Path) -> Job | None:
        try:
            return await self._admit(path, "inbox", clean_name(path.name), self._default())
        except Exception as e:
            log.error("intake: could not adopt %s: %s", path.name, e)
            return None

    def _default(self) -> str:
        return self.config.encode.default_profile

    def _resume(self, job: Job, claimed: Path) -> None:
        async def resume() -> Job | None:
            try:
                return await self._settle(job, claimed, back_to=None)
            except Exception as e:
                log.error("intake: %s: admission not finished (next start tries again): %s",
                          job.id, e)  # fmt: skip
                return None

        self._track(asyncio.ensure_future(resume()))

    async def stop(self, timeout_s: float) -> None:
        """Let admissions in flight finish (each is short), then cancel the rest: the
        next start finishes or rolls back what a cancel cuts short."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


def put_aside(layout: Layout, job: Job, claimed: Path) -> None:
    """A rejected inbox file goes to rejected/; a rejected upload is dropped (the user
    still has it; keeping it would only fill the disk)."""
    try:
        if job.origin == "upload":
            claimed.unlink(missing_ok=True)
        elif claimed.exists():
            layout.rejected_dir.mkdir(parents=True, exist_ok=True)
            os.rename(claimed, layout.rejected(job))
    except OSError as e:  # the next start finishes this (_sort_sources)
        log.warning("intake: %s: could not put the rejected file aside: %s", job.id, e)


async def reject_scanned(store: Store, layout: Layout, job: Job, reason: str) -> Job:
    """End a running job rejected: its encode's scan found that it is not a video
    (EncodeFailed with `reject`), the intake having left the probe to it. As the probe
    would have: the same error, and an inbox file kept as rejected/<id>-<name>.

    The pool records a job's end with this (from _outcome). The store's word comes
    first, the name in rejected/ with it, so a crash before the move can't lose the
    file: the next start moves it (recover). Raises what the store raises (KeyError
    when the job is gone, IllegalTransition when it is no longer running); the file
    stays where it is then.
    """
    kept = layout.rejected_name(job) if job.origin == "inbox" else None
    rejected = await store.reject(job.id, reason, rejected_as=kept, was=Status.RUNNING)
    put_aside(layout, rejected, layout.source(rejected))
    where = f", kept as rejected/{rejected.rejected_as}" if rejected.rejected_as else ""
    log.info(
        "intake: %s rejected by its encode's scan (%s, %r%s): %s",
        job.id, job.origin, job.name, where, reason,
    )  # fmt: skip
    return rejected


async def _same_file(a: Path, b: Path | None) -> bool:
    """Whether `b` holds the same bytes as `a`. Size alone is not enough: a new file
    dropped under the claimed one's name can have its size, and must not be deleted."""
    try:
        if b is None or a.stat().st_size != b.stat().st_size:
            return False
        return await asyncio.to_thread(filecmp.cmp, a, b, shallow=False)
    except OSError:
        return False


async def _move(src: Path, dst: Path, guard: disk.DiskGuard | None = None) -> None:
    """Rename `src` to `dst`; across filesystems, copy, fsync, then unlink.

    A copy reserves its size with the disk guard (else DiskFull). On any failure `src` is
    left as it was.
    """
    try:
        os.rename(src, dst)
        return
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
    size = os.lstat(src).st_size
    tmp = dst.with_name(f".{dst.name}.partial")
    abort = threading.Event()
    with guard.reserve(size) if guard is not None else contextlib.nullcontext():
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


async def _put_back(current: Path, original: Path) -> bool:
    """Return a claimed file to where it came from, never over another file.
    False if it stays where it is."""
    try:
        if current == original or not os.path.lexists(current):
            return True
        if os.path.lexists(original):
            log.error("intake: %s stays at %s: %s is taken", original.name, current, original)
            return False
        await _move(current, original)
        return True
    except Exception as e:
        log.error("intake: could not put %s back to %s: %s", current, original, e)
        return False


def _log_orphan(task: asyncio.Task[Job]) -> None:
    if not task.cancelled() and (e := task.exception()) is not None:
        log.error("intake: admission failed after its caller left: %r", e)
