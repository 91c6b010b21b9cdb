"""A remote encode worker's run of one attempt (contracts.md, "Worker behaviour"):
claim it from the front, download the source (resumed with Range after a drop) into a
private work folder, encode it with vidd's own Encoder, send the log and the output back,
or report the failure; all the while a heartbeat keeps the lease. When the front says
stop (410), or no heartbeat has reached it for lease_s, HandBrake is stopped and the task
dropped: the front's SQLite is the record of truth, never this process.

The Celery side (the task `vidd.encode` and the worker process) is worker_process.py.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import aiohttp

from . import timeouts
from .celery_app import Dispatch
from .config import Config, Encode, Profile, Storage, Watch
from .encoder import EncodeFailed, Encoder
from .front_client import Claim, FrontClient, Refused, Rejected, Stop, Unreachable
from .job import Job, Status, now
from .layout import Layout
from .progress import Progress
from .reserved_args import reserved_arg

log = logging.getLogger(__name__)

PROFILE = "remote"  # the one profile of a worker's private config: the message's args
RELEASE_S = 1.0  # on a stop: how long the front gets to take the attempt back
KILL_GRACE_S = 1.0  # SIGTERM to SIGKILL for HandBrake's group: gone well within 2 s
FIRST_RETRY_S, MAX_RETRY_S = 0.2, 2.0
MAX_HEARTBEAT_GAP_S = 5.0  # a heartbeat at least this often, and at least 4 per lease

T = TypeVar("T")


@dataclass(frozen=True)
class Settings:
    """What `vidd worker` was started with."""

    name: str  # the worker's name as the front shows it
    work_dir: Path  # its own folder: one attempt-* folder in it per attempt
    handbrake: str  # the HandBrakeCLI path (resolved)
    max_encode_s: float = 21600.0
    # How long to keep trying a claim while the front does not answer (its lease is not
    # known before the claim): the front's default workers.lease_s.
    claim_patience_s: float = 60.0


class Heartbeat:
    """Posts progress to the front: at most every `interval_s`, and at least every
    min(5 s, lease_s / 4) without news. `run()` returns the reason to stop: the front
    said so (410, or the attempt is not ours), or no post got through for lease_s."""

    def __init__(self, client: FrontClient, lease_s: float, interval_s: float) -> None:
        self._client = client
        self.lease_s = lease_s
        self.interval_s = max(0.25, interval_s)
        self.idle_s = max(self.interval_s, min(MAX_HEARTBEAT_GAP_S, lease_s / 4))
        self._latest: tuple[float, float | None, float | None] = (0.0, None, None)
        self._dirty = False
        self._changed = asyncio.Event()
        self.posted = 0

    def __repr__(self) -> str:
        return f"<Heartbeat posted={self.posted} latest={self._latest[0]:.3f}>"

    def update(self, progress: float, fps: float | None, eta_s: float | None) -> None:
        self._latest = (progress, fps, eta_s)
        self._dirty = True
        self._changed.set()

    async def run(self) -> str:
        last_ok = last_post = time.monotonic()
        first = True
        down_since: float | None = None
        while True:
            clock = time.monotonic()
            due = last_post if first else last_post + self.idle_s
            if self._dirty:
                due = min(due, last_post + self.interval_s)
            if clock < due:
                self._changed.clear()
                if self._dirty:
                    await asyncio.sleep(due - clock)
                else:
                    await timeouts.wait_event(self._changed, due - clock)
                continue
            first, self._dirty, last_post = False, False, clock
            left = self.lease_s - (clock - last_ok)
            try:
                await timeouts.wait_for(
                    self._client.progress(*self._latest), max(0.5, min(self.idle_s, left))
                )
                self.posted += 1
                last_ok = time.monotonic()
                if down_since is not None:
                    log.info("heartbeat: the front answers again (%.1f s)", last_ok - down_since)
                    down_since = None
            except Stop as e:
                return f"the front said stop ({e.status} {e.code})"
            except (Unreachable, Refused, TimeoutError) as e:
                if down_since is None:
                    down_since = clock
                    log.warning("heartbeat: %s", str(e) or "timed out")
            if time.monotonic() - last_ok >= self.lease_s:
                return f"no heartbeat reached the front for {self.lease_s:g} s"


class FrontAway(Exception):
    """The front did not answer the claim for claim_patience_s: the message goes back to
    the queue. (Dropped, it would leave the front waiting for a claim that never comes.)"""


async def run_attempt(dispatch: Dispatch, settings: Settings) -> str:
    """Run one attempt to its end; returns what happened, in words (for the log), or
    raises FrontAway before a claim. Every way out removes the attempt's work folder."""
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="attempt-", dir=settings.work_dir))
    started = time.monotonic()
    try:
        async with aiohttp.ClientSession() as session:
            try:
                client = FrontClient(session, dispatch)
                claim = await _patiently(
                    lambda: client.claim(settings.name), settings.claim_patience_s
                )
            except Stop as e:
                return f"dropped: the front refused the claim ({e.status} {e.code})"
            except Unreachable as e:
                raise FrontAway(f"no claim: {e}") from None
            except Refused as e:
                return f"dropped: no claim ({e})"
            log.info("attempt %s: claimed job %s", dispatch.attempt, claim.job)
            run = _Run(client, claim, dispatch, settings, folder)
            try:
                return await run.supervised()
            except asyncio.CancelledError:  # a stop (SIGTERM): HandBrake is reaped already
                await _hand_back(client, dispatch.attempt)
                raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        log.debug("attempt %s: %.1f s", dispatch.attempt, time.monotonic() - started)


async def _hand_back(client: FrontClient, attempt: str) -> None:
    """Tell the front this worker stops, so it dispatches the job again at once; at most
    RELEASE_S (the stop must stay quick), and a front that doesn't hear it has the lease."""
    telling = asyncio.create_task(client.release())
    done, _ = await asyncio.wait({telling}, timeout=RELEASE_S)
    if not done:
        telling.cancel()
    elif telling.exception() is not None:
        log.warning("attempt %s: the front did not take it back: %s", attempt, telling.exception())
    else:
        log.info("attempt %s: handed back to the front", attempt)


async def _patiently(call: Callable[[], Awaitable[T]], patience_s: float) -> T:
    """`call()` again after Unreachable, with backoff, until `patience_s` has passed since
    the first failure (not since the first call: an upload longer than the lease that
    drops once is sent again)."""
    deadline: float | None = None
    delay = FIRST_RETRY_S
    while True:
        try:
            return await call()
        except Unreachable as e:
            if deadline is None:
                deadline = time.monotonic() + patience_s
            if time.monotonic() + delay >= deadline:
                raise
            log.info("%s; again in %.1f s", e, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_S)


class _Run:
    """One claimed attempt: the work (download, encode, send back) beside its heartbeat."""

    def __init__(
        self,
        client: FrontClient,
        claim: Claim,
        dispatch: Dispatch,
        settings: Settings,
        folder: Path,
    ) -> None:
        self.client = client
        self.claim = claim
        self.dispatch = dispatch
        self.settings = settings
        self.config = private_config(settings, folder, dispatch.args)
        self.layout = Layout(self.config.storage)
        self.heartbeat = Heartbeat(client, claim.lease_s, claim.progress_interval_s)
        self.job = Job(
            id=claim.job,
            name=claim.job,
            status=Status.RUNNING,
            profile=PROFILE,
            origin="remote",
            source_ext=claim.source_ext,
            created_at=now(),
            source=claim.source,
        )

    async def supervised(self) -> str:
        """The work, stopped (HandBrake's group killed and reaped) when the heartbeat ends."""
        work = asyncio.create_task(self.work())
        beat = asyncio.create_task(self.heartbeat.run())
        try:
            await asyncio.wait({work, beat}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not work.done():
                work.cancel()
            beat.cancel()
            await asyncio.gather(work, beat, return_exceptions=True)
        if not work.cancelled() and work.exception() is None:
            return work.result()
        if beat.done() and not beat.cancelled() and beat.exception() is None:
            return f"stopped: {beat.result()}"
        error = work.exception() if not work.cancelled() else None
        if isinstance(error, Stop):
            return f"dropped: the front said stop ({error.status} {error.code})"
        if isinstance(error, Unreachable | Refused):
            return f"dropped: {error}"
        if error is not None:
            raise error
        return "cancelled"

    async def work(self) -> str:
        bad = reserved_arg(self.dispatch.args)
        if bad is not None:
            return await self.failed("bad_profile", f"{bad} is set by vidd itself", "")
        try:
            await self.download()
        except Refused as e:  # a 404 (the front lost it) or more bytes than it said
            return await self.failed(
                "source_unreadable", f"the source could not be fetched: {e}", ""
            )
        try:
            result = await timeouts.wait_for(
                Encoder(self.config, self.layout).run(self.job, self.on_progress),
                self.settings.max_encode_s,
            )
        except EncodeFailed as e:
            return await self.failed(e.code, e.message, e.log_tail)
        except TimeoutError:
            return await self.failed(
                "too_long", f"the encode took longer than {self.settings.max_encode_s:g} s", ""
            )
        self.heartbeat.update(1.0, None, 0.0)
        try:
            await self.client.log(result.log_tail)
        except (Unreachable, Refused) as e:  # the log is optional; the output is not
            log.warning("attempt %s: the log was not sent: %s", self.dispatch.attempt, e)
        output = self.layout.video(self.job.id)
        size = output.stat().st_size
        if size > self.claim.max_output_bytes:
            return await self.failed(
                "output_too_large",
                f"the output is {size} bytes, over the front's {self.claim.max_output_bytes}",
                result.log_tail,
            )
        try:
            await self.persistently(lambda: self.client.upload(output))
        except Rejected as e:
            return f"output refused by the front ({e.code}: {e.message})"
        return f"done: job {self.job.id} ({size} bytes sent)"

    def on_progress(self, p: Progress) -> None:
        self.heartbeat.update(p.progress, p.fps, p.eta_s)

    async def download(self) -> None:
        path = self.layout.source(self.job)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Resumed after every drop: the heartbeat ends the run if the front stays away.
        await _patiently(lambda: self.client.download(path, self.claim.source.size), math.inf)

    async def failed(self, code: str, message: str, log_tail: str) -> str:
        await self.persistently(lambda: self.client.fail(code, message, log_tail))
        return f"failed: {code}: {message}"

    async def persistently(self, call: Callable[[], Awaitable[None]]) -> None:
        """Send until it gets through: retried with backoff until lease_s without success."""
        await _patiently(call, self.claim.lease_s)


class WorkDirBusy(Exception):
    """Another `vidd worker` holds this work folder."""


def take_work_dir(work_dir: Path) -> tuple[int, int]:
    """Make the work folder this process's own: an exclusive lock on the folder itself
    (no file of its own: the folder stays empty between attempts), held as long as the
    returned descriptor stays open (the Celery pool's processes share it), then remove
    the attempt folders a killed run left. Returns (fd, removed)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(work_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise WorkDirBusy(f"another vidd worker uses {work_dir}") from None
    removed = 0
    for leftover in work_dir.glob("attempt-*"):
        shutil.rmtree(leftover, ignore_errors=True)
        removed += 1
    return fd, removed


def private_config(settings: Settings, folder: Path, args: tuple[str, ...]) -> Config:
    """A Config for one attempt's work folder: its data_dir, and one profile whose args
    are the message's. No inbox, no ffmpeg (the front makes the poster), no disk floor
    (the front's output limit bounds what the worker writes)."""
    return Config(
        path=folder / "worker.toml",
        storage=Storage(data_dir=folder, min_free_bytes=0),
        watch=Watch(enabled=False),
        encode=Encode(
            handbrake=settings.handbrake,
            ffmpeg="",
            max_parallel=1,
            default_profile=PROFILE,
            kill_grace_s=KILL_GRACE_S,
            profiles={PROFILE: Profile(args=args)},
        ),
    )
