"""The inbox watcher: notices files dropped into the inbox and hands each to Intake once
it is complete, never while it is still being written.

With `watch.recursive`, files in subfolders (down to `watch.max_depth`) are taken too,
and the job remembers its subfolder; without it, each subfolder is named once in the log
as left alone.

Complete means: no process holds it open for writing (asked of Linux with a lease,
see lease.py), no event for `watch.lease_quiet_seconds`, and the same size and mtime
on two checks in a row. Where Linux can't answer, `watch.stable_seconds` of quiet
stands in for the lease.

A file renamed in whole (its arrival its only event, and a rename by inotify's own word,
see arrivals.py, or its content unchanged for `watch.lease_quiet_seconds` by its mtime)
needs no quiet after the rename: it moved no data, and was written before it came, so
only the lease stands between it and the intake, asked as soon as its event arrives: on
that first look a second stat would only repeat what the rename says. Once looked at, a
file that changes between two checks waits (the change's event may still be on its way),
and any other event (a write, a close, a change of mode) puts it back on the quiet rule.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from pathlib import Path

from watchfiles import Change, awatch

from . import lease, timeouts
from .arrivals import Arrivals
from .config import Config
from .intake import Intake, clean_name

log = logging.getLogger(__name__)

TICK_S = 0.1  # how often candidates are checked
# watchfiles hands over events after this much quiet (measured: 50 -> 20 ms takes the
# rename -> running p50 from 0.09-0.12 s to 0.04 s, for ~0.1 % more of a core at idle)...
STEP_MS = 20
DEBOUNCE_MS = 400  # ...or after this long, when a writer keeps the events coming
MAX_CANDIDATES = 10_000  # a flood of files can't grow memory past this; rescans catch up
MAX_SCAN_ENTRIES = 100_000  # entries one rescan looks at, subfolders included
ADMIT_SLOTS = 2  # files probed at once
ARM_WAIT_STEPS = 500  # up to ~5 s for watchfiles to set up
STOP_GRACE_S = 5.0  # how long stop() lets admissions in flight finish (the rest recover)
RETRY_FIRST_S = 5.0  # a passing failure (disk full, database locked, no HandBrakeCLI)...
RETRY_MAX_S = 300.0  # ...is retried after this long, doubling up to this
TEMP_SUFFIXES = (".part", ".partial", ".crdownload", ".tmp", ".download")


def ignored_name(name: str) -> bool:
    """Hidden and temporary files: a browser or copy tool is still busy with them."""
    return name.startswith(".") or name.endswith("~") or name.lower().endswith(TEMP_SUFFIXES)


def _why_not_taken(mode: int, max_depth: int | None = None) -> str:
    """Why an inbox entry that is not a regular file stays where it is. `max_depth`: the
    bound a folder is past, when the watch is recursive."""
    if stat.S_ISLNK(mode):
        return "it is a symlink, and vidd only takes regular files (move the file in instead)"
    if stat.S_ISDIR(mode) and max_depth is not None:
        return (
            f"it is a folder deeper than watch.max_depth ({max_depth}), so vidd does not "
            "look into it"
        )
    if stat.S_ISDIR(mode):
        return (
            "it is a folder, and vidd does not look into folders in the inbox while "
            "watch.recursive is off"
        )
    if stat.S_ISFIFO(mode):
        return "it is a FIFO (named pipe), and vidd only takes regular files"
    return "it is not a regular file (a socket or a device), and vidd only takes regular files"


@dataclass
class _Candidate:
    last_event: float  # monotonic time of the last event (or of being found)
    sig: tuple[int, int] | None = None  # (size, mtime_ns) at the previous check
    events: int = 0  # events seen for it (a rescan's finding is none)
    admitting: bool = False
    failed_sig: tuple[int, int] | None = None  # what admit failed on; retried once it changes
    failed_at: float = 0.0
    retry_at: float = 0.0  # after a passing failure: not before this (monotonic)
    retry_delay: float = 0.0
    trouble: str = ""  # why the last try failed, for /api/status
    seen_at: float = field(default_factory=time.monotonic)  # for the debug log's timing


class Watcher:
    def __init__(self, config: Config, intake: Intake) -> None:
        self.config = config
        self.intake = intake
        self.inbox = config.storage.inbox_dir
        self._arrivals = Arrivals(self.inbox)  # which files were renamed in whole
        self._candidates: dict[Path, _Candidate] = {}
        # Entries that are not regular files, each said once: (device, inode, type) by path.
        self._not_taken: dict[Path, tuple[int, int, int]] = {}
        self._admitting: set[asyncio.Task[None]] = set()
        self._watch_stop = asyncio.Event()  # one per watchfiles loop: cancelling one sets it
        self._rescan_now = asyncio.Event()
        self._poll_now = asyncio.Event()  # a new file arrived: look now, not at the tick
        self._watch_task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._inbox_id: tuple[int, int] | None = None
        self._overflowed = False
        self._armed = False
        self._rearm = False
        self.arms = 0  # watches set up: more than one means the inbox had to be re-watched
        self.scans = 0  # full looks at the inbox
        self.taken = 0
        self.failures = 0

    def __repr__(self) -> str:
        return (
            f"<Watcher {self.inbox} watching={self.watching} candidates={len(self._candidates)} "
            f"arms={self.arms} scans={self.scans} taken={self.taken} failures={self.failures}>"
        )

    def troubles(self, limit: int = 20) -> list[dict[str, object]]:
        """Inbox files that could not be taken, with why and when they are tried again."""
        now = time.monotonic()
        found: list[dict[str, object]] = []
        for path, cand in self._candidates.items():
            if cand.trouble and not cand.admitting:
                retry = max(0.0, cand.retry_at - now) if cand.failed_sig is None else None
                name = clean_name(path.name)
                found.append({"name": name, "reason": cand.trouble, "retry_in_s": retry})
                if len(found) >= limit:
                    break
        return found

    @property
    def watching(self) -> bool:
        task = self._watch_task
        return self._armed and task is not None and not task.done()

    async def start(self) -> None:
        """Watch the inbox (created if missing) and take the files already in it.

        Returns once events are being received.
        """
        if self._tasks:
            return
        lease.ignore_lease_breaks(asyncio.get_running_loop())
        await self._arm()
        self._tasks = [
            asyncio.create_task(self._poll_loop(), name="watcher-poll"),
            asyncio.create_task(self._rescan_loop(), name="watcher-rescan"),
        ]
        log.info("watcher: watching %s", self.inbox)

    async def stop(self) -> None:
        """Stop watching; admissions in flight get a grace period to finish. Idempotent."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._disarm()
        if self._admitting:
            _, pending = await asyncio.wait(set(self._admitting), timeout=STOP_GRACE_S)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    # --- watching ------------------------------------------------------------

    async def _arm(self) -> None:
        """(Re)start the watchfiles loop, then scan: files that came before it are seen too."""
        await self._disarm()
        self.inbox.mkdir(parents=True, exist_ok=True)
        self._arrivals.open()
        st = self.inbox.stat()
        self._inbox_id = (st.st_dev, st.st_ino)
        self._watch_stop = asyncio.Event()
        self.arms += 1
        changes = awatch(
            self.inbox,
            watch_filter=None,
            recursive=self.config.watch.recursive,
            step=STEP_MS,
            debounce=DEBOUNCE_MS,
            stop_event=self._watch_stop,
            ignore_permission_denied=True,
        )
        self._watch_task = asyncio.create_task(self._watch(changes), name="watcher-events")
        # awatch sets up inotify synchronously in its first step, then waits in a
        # thread: once it is suspended there (ag_await), events are being recorded.
        for i in range(ARM_WAIT_STEPS):
            if getattr(changes, "ag_await", None) is not None or self._watch_task.done():
                break
            await asyncio.sleep(0 if i < 10 else 0.01)
        self._armed = not self._watch_task.done()
        self._scan()

    async def _disarm(self) -> None:
        task, self._watch_task = self._watch_task, None
        self._armed = False
        self._arrivals.close()
        if task is None:
            return
        # Cancelling alone would wait for the watchfiles thread's next timeout (5 s);
        # the stop event ends it within STEP_MS.
        self._watch_stop.set()
        await asyncio.wait({task}, timeout=2.0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def _watch(self, changes: AsyncGenerator[set[tuple[Change, str]], None]) -> None:
        async for batch in changes:
            for change, raw in batch:
                self._note(Path(raw), found=False, deleted=change == Change.deleted)

    def _note(self, path: Path, *, found: bool, deleted: bool = False) -> None:
        if path == self.inbox:
            # The inbox itself was deleted or moved: its inotify watch is dead, and
            # a new folder of the same name (maybe with the same inode) needs a new one.
            self._rearm = True
            self._rescan_now.set()
            return
        if ignored_name(path.name) or self._depth(path) is None:
            return
        cand = self._candidates.get(path)
        if cand is not None:
            # A rescan only wakes a failed file, so a missed event can't strand it.
            if not found or cand.failed_sig is not None:
                cand.last_event = time.monotonic()
            if not found:
                cand.events += 1
            return
        if deleted:
            return
        if len(self._candidates) >= MAX_CANDIDATES:
            self._overflowed = True
            return
        self._candidates[path] = _Candidate(last_event=time.monotonic(), events=0 if found else 1)
        if not found:
            self._poll_now.set()

    def _depth(self, path: Path) -> int | None:
        """How many subfolders deep `path` is in the inbox (0: at the top); None when it
        is not a place files are taken from (outside, too deep, in a hidden folder)."""
        if path.parent == self.inbox:
            return 0
        if not self.config.watch.recursive:
            return None
        try:
            folders = path.parent.relative_to(self.inbox).parts
        except ValueError:
            return None
        if len(folders) > self.config.watch.max_depth or any(map(ignored_name, folders)):
            return None
        return len(folders)

    def _scan(self) -> None:
        present: set[Path] = set()
        budget = [MAX_SCAN_ENTRIES]
        if not self._scan_folder(self.inbox, 0, present, budget):
            return
        self.scans += 1
        # Forget what is gone, so that a new entry of the same name is said again.
        for path in self._not_taken.keys() - present:
            del self._not_taken[path]

    def _scan_folder(self, folder: Path, depth: int, present: set[Path], budget: list[int]) -> bool:
        """Note the files of `folder` (and, when recursive, of its subfolders down to
        watch.max_depth). False when the inbox itself can't be listed."""
        watch = self.config.watch
        subfolders: list[Path] = []
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    budget[0] -= 1
                    if len(self._candidates) >= MAX_CANDIDATES or budget[0] < 0:
                        self._overflowed = len(self._candidates) >= MAX_CANDIDATES
                        return True
                    if entry.is_file(follow_symlinks=False):
                        self._note(Path(entry.path), found=True)
                    elif ignored_name(entry.name):
                        continue
                    elif (
                        watch.recursive
                        and depth < watch.max_depth
                        and entry.is_dir(follow_symlinks=False)
                    ):
                        subfolders.append(Path(entry.path))
                    else:
                        with contextlib.suppress(OSError):  # gone since it was listed
                            self._say_not_taken(Path(entry.path), entry.stat(follow_symlinks=False))
                            present.add(Path(entry.path))
        except OSError as e:
            log.warning("watcher: can't list %s: %s", folder, e)
            return folder != self.inbox
        for sub in subfolders:
            self._scan_folder(sub, depth + 1, present, budget)
        return True

    def _say_not_taken(self, path: Path, st: os.stat_result) -> None:
        """One log line per entry that is never taken, however often it is seen."""
        ident = (st.st_dev, st.st_ino, stat.S_IFMT(st.st_mode))  # inodes get reused
        if self._not_taken.get(path) == ident or len(self._not_taken) >= MAX_CANDIDATES:
            return
        self._not_taken[path] = ident
        watch = self.config.watch
        why = _why_not_taken(st.st_mode, watch.max_depth if watch.recursive else None)
        shown = path.relative_to(self.inbox) if path.is_relative_to(self.inbox) else path.name
        log.warning("watcher: %s stays in the inbox: %s", shown, why)

    async def _rescan_loop(self) -> None:
        """Catch missed events, and re-arm if the inbox was replaced or the watch died."""
        period = max(self.config.watch.rescan_seconds, 0.5)
        while True:
            await timeouts.wait_event(self._rescan_now, period)
            self._rescan_now.clear()
            try:
                st = self.inbox.stat()
                replaced = (st.st_dev, st.st_ino) != self._inbox_id
            except FileNotFoundError:
                replaced = True
            task = self._watch_task
            if replaced or self._rearm or task is None or task.done():
                self._rearm = False
                if task is not None and task.done() and not task.cancelled() and task.exception():
                    log.error("watcher: watching %s failed: %r", self.inbox, task.exception())
                log.warning("watcher: re-arming the watch on %s", self.inbox)
                try:
                    await self._arm()
                except OSError as e:
                    self._armed = False
                    log.error("watcher: can't watch %s: %s", self.inbox, e)
            else:
                self._scan()

    # --- deciding when a file is complete -------------------------------------

    async def _poll_loop(self) -> None:
        while True:
            await timeouts.wait_event(self._poll_now, TICK_S)
            self._poll_now.clear()
            try:
                self._poll()
            except Exception:  # a bug here must not end the watching
                log.exception("watcher: poll failed")

    def _poll(self) -> None:
        watch = self.config.watch
        quiet_needed = watch.lease_quiet_seconds
        now = time.monotonic()
        wall_ns = time.time_ns()
        self._arrivals.catch_up()
        for path, cand in list(self._candidates.items()):
            if len(self._admitting) >= ADMIT_SLOTS:
                break
            if cand.admitting:
                continue
            if cand.failed_sig is not None and cand.last_event <= cand.failed_at:
                continue  # failed, and nothing happened to it since
            if now < cand.retry_at:
                continue  # a passing failure: wait out the backoff
            quiet = now - cand.last_event
            # Stat from one tick before the quiet time is up, so the two stats that
            # must agree are done by the time it is; a file that may have been renamed
            # in whole, at once.
            if quiet < quiet_needed - TICK_S and cand.events > 1:
                continue
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                del self._candidates[path]
                continue
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode) and self.config.watch.recursive:
                del self._candidates[path]  # a new subfolder: look into it now
                self._rescan_now.set()
                continue
            if not stat.S_ISREG(st.st_mode):  # folders, symlinks, fifos: never taken
                del self._candidates[path]
                self._say_not_taken(path, st)
                continue
            sig = (st.st_size, st.st_mtime_ns)
            prev, cand.sig = cand.sig, sig
            if cand.failed_sig is not None:
                if sig == cand.failed_sig:
                    cand.failed_at = now  # touched but unchanged: still failed
                    continue
                cand.failed_sig = None
            # Its arrival its only event, and renamed in (the kernel says so, or its mtime
            # shows no write for the quiet time): it arrived whole.
            renamed_in = cand.events <= 1 and (
                self._arrivals.whole(path) or wall_ns - st.st_mtime_ns >= quiet_needed * 1e9
            )
            # A change between two checks is a write whose event may still be on its way:
            # wait for it. Only a first look at a renamed-in file needs no second one.
            if sig != prev and not (renamed_in and prev is None):
                continue
            if quiet < quiet_needed and not renamed_in:
                continue
            try:
                writer = lease.has_writer(path)
            except FileNotFoundError:
                del self._candidates[path]
                continue
            if writer:
                continue  # however long it has been quiet
            # Without a lease, only long quiet tells. An empty file is often a
            # placeholder about to be written, so it waits as long either way.
            if (writer is None or st.st_size == 0) and quiet < watch.stable_seconds:
                continue
            self._take(path, cand)
        if self._overflowed and len(self._candidates) < MAX_CANDIDATES // 2:
            self._overflowed = False
            self._rescan_now.set()

    def _take(self, path: Path, cand: _Candidate) -> None:
        cand.admitting = True
        self.taken += 1
        log.debug(
            "watcher: taking %s, %.3f s after it was seen (%d event(s))",
            path.name, time.monotonic() - cand.seen_at, cand.events,
        )  # fmt: skip
        task = asyncio.create_task(self._admit(path, cand), name=f"watcher-admit {path.name}")
        self._admitting.add(task)
        task.add_done_callback(self._admitting.discard)

    async def _admit(self, path: Path, cand: _Candidate) -> None:
        try:
            folder = path.parent.relative_to(self.inbox).as_posix()
            await self.intake.admit(path, "inbox", folder="" if folder == "." else folder)
        except FileNotFoundError:  # taken away meanwhile
            cand.admitting = False
            self._candidates.pop(path, None)
            return
        except ValueError as e:
            # Wrong in itself (not a regular file): try again only once it changes.
            self.failures += 1
            log.error("watcher: could not admit %s: %s", path.name, e)
            cand.admitting = False
            cand.failed_sig = cand.sig
            cand.failed_at = time.monotonic()
            cand.trouble = str(e)
            return
        except Exception as e:
            # Passing (disk full, database locked, HandBrakeCLI missing): the file stays
            # in the inbox and is tried again, later and later.
            self.failures += 1
            cand.admitting = False
            cand.retry_delay = min(max(cand.retry_delay * 2, RETRY_FIRST_S), RETRY_MAX_S)
            cand.retry_at = time.monotonic() + cand.retry_delay
            cand.trouble = str(e) or type(e).__name__
            log.warning(
                "watcher: could not admit %s (%s); trying again in %.0f s",
                path.name, cand.trouble, cand.retry_delay,
            )  # fmt: skip
            return
        if self._candidates.get(path) is cand:
            del self._candidates[path]
        if os.path.lexists(path):  # a new file of the same name came meanwhile
            self._note(path, found=False)
            again = self._candidates.get(path)
            if again is not None:  # its own events went to the one admitted: no fast path
                again.events = max(again.events, 2)
