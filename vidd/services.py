"""The composition root: builds vidd's services in dependency order, subscribes every
store listener, recovers from the last run, and stops it all in the reverse order.

Nothing here knows about HTTP; the web app gets a `Services` and the daemon runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field

from . import children, disk, timeouts
from .config import Config
from .dispatch import CeleryDispatcher, Dispatcher
from .encoder import Encoder
from .intake import Intake
from .job import Job
from .layout import Layout
from .lifecycle import Lifecycle
from .metrics import Metrics
from .notify import Notifier
from .pool import Pool
from .progress import parse_blocks
from .publish import Publisher
from .remote import RemoteEncoder
from .store import Listener, Store
from .uploads import Uploads
from .watcher import Watcher

log = logging.getLogger(__name__)

HEALTH_TIMEOUT_S = 2.0


class AlreadyRunning(Exception):
    pass


@dataclass
class Services:
    """Everything the web layer needs, started and stopped together."""

    config: Config
    layout: Layout
    disk: disk.DiskGuard
    store: Store
    intake: Intake
    encoder: Encoder | RemoteEncoder
    pool: Pool
    jobs: Lifecycle
    watcher: Watcher | None
    handbrake_version: str
    notifier: Notifier
    uploads: Uploads
    publisher: Publisher | None = None
    started_at: float = field(default_factory=time.monotonic)
    metrics: Metrics = field(default_factory=Metrics)  # a store listener, for /metrics
    _health: tuple[float, list[str]] = field(default=(-1e9, []), init=False, repr=False)

    @property
    def uptime_s(self) -> float:
        return time.monotonic() - self.started_at

    @property
    def remote(self) -> RemoteEncoder | None:
        """The remote encoder, in `workers.mode = "celery"`."""
        return self.encoder if isinstance(self.encoder, RemoteEncoder) else None

    @property
    def broker(self) -> str | None:
        """The broker's last known state: "up", "down", or None (local mode, or not
        asked yet). Never waits: the encoder pings in the background."""
        return self.remote.broker_state if self.remote is not None else None

    @property
    def watching(self) -> bool:
        return self.watcher is not None and self.watcher.watching

    async def stop_intake(self, timeout_s: float) -> None:
        """No new files: the watcher stops, admissions in flight get `timeout_s`."""
        if self.watcher is not None:
            await self.watcher.stop()
        await self.intake.stop(timeout_s)

    async def problems(self, max_age_s: float = 0.0) -> list[str]:
        """What keeps vidd from doing its work, in words; empty when it is healthy.
        A reading younger than `max_age_s` is reused."""
        checked_at, found = self._health
        if time.monotonic() - checked_at < max_age_s:
            return list(found)
        found = await self._check()
        self._health = (time.monotonic(), found)
        return list(found)

    async def _check(self) -> list[str]:
        found = list(self.pool.problems())
        try:
            await timeouts.wait_for(self.store.check_writable(), HEALTH_TIMEOUT_S)
        except Exception:  # locked, read-only, full or closed: the words say enough
            found.append("the database does not take writes")
        if shutil.which(self.config.encode.handbrake) is None:
            found.append(f"HandBrakeCLI ({self.config.encode.handbrake}) is missing")
        if self.watcher is not None and not self.watcher.watching:
            found.append("the inbox is not being watched")
        return found


async def handbrake_version(handbrake: str) -> str:
    try:
        code, out, _ = await children.run([handbrake, "--json", "--version"], timeout_s=15)
    except (OSError, TimeoutError):
        return "unknown"
    version = parse_blocks(out).get("Version", {}).get("VersionString")
    if version:
        return str(version)
    first = out.strip().splitlines()[:1]
    return first[0].removeprefix("HandBrake ").strip() if first else "unknown"


class StatusLine:
    """Keeps systemd's STATUS= line ("1 encoding, 4 queued") in step with the store."""

    def __init__(self, store: Store, pool: Pool, notifier: Notifier) -> None:
        self.store = store
        self.pool = pool
        self.notifier = notifier
        self._dirty = False
        self._pending: asyncio.Task[None] | None = None

    def job_changed(self, job: Job, *, progress_only: bool) -> None:
        if not progress_only:
            self._schedule()

    def job_deleted(self, job_id: str) -> None:
        self._schedule()

    def _schedule(self) -> None:
        self._dirty = True  # a burst of changes costs one count query, never a stale line
        if self._pending is None or self._pending.done():
            self._pending = asyncio.create_task(self._send())

    async def _send(self) -> None:
        while self._dirty:
            self._dirty = False
            await asyncio.sleep(0)  # let the transition that woke us finish first
            try:
                counts = await self.store.counts()
            except Exception:  # the line waits for the next change
                return
            self.notifier.status(f"{self.pool.busy} encoding, {counts['queued']} queued")

    async def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            await asyncio.gather(self._pending, return_exceptions=True)


@contextlib.asynccontextmanager
async def open_services(
    config: Config,
    notifier: Notifier | None = None,
    listeners: Sequence[Listener] = (),
    dispatcher: Dispatcher | None = None,
) -> AsyncIterator[Services]:
    """Open the store, recover from the last run, start the pool and the watcher.

    `listeners` (the web's hub and page cache) hear every change of the store, as the
    pool and the status line do; all are subscribed here and unsubscribed on the way out.
    In `workers.mode = "celery"` jobs run on remote workers through `dispatcher` (the
    Celery one unless a test gives its own).
    """
    layout = Layout(config.storage)
    layout.make_dirs()
    notifier = notifier or Notifier.from_env()
    with _single_instance(config):
        async with Store(config.storage.db_path) as store:
            guard = disk.DiskGuard.of(config.storage)
            local = Encoder(config, layout)
            encoder: Encoder | RemoteEncoder = local
            if config.workers.mode == "celery":
                dispatcher = dispatcher or CeleryDispatcher(
                    config.workers.broker_url, max_encode_s=config.workers.max_encode_s
                )
                encoder = RemoteEncoder(config, layout, store, dispatcher, local)
            publisher = Publisher(config, store, layout)
            pool = Pool(config, store, encoder, layout, guard, publisher)
            # An inbox file that finds a slot free skips the probe: its local encode scans
            # it anyway (issue 14). Remote workers need the facts before dispatch.
            intake = Intake(
                config, store, layout, guard, scan_in_encode=config.workers.mode == "local"
            )
            await _recover(store, intake, layout, encoder, pool)
            await publisher.recover()  # results a crash left unpublished
            uploads = Uploads(config, store, layout, guard)
            await uploads.open()  # after the intake's recovery: an admission may put one back
            watcher = Watcher(config, intake) if config.watch.enabled else None
            svc = Services(
                config=config,
                layout=layout,
                disk=guard,
                store=store,
                intake=intake,
                encoder=encoder,
                pool=pool,
                jobs=Lifecycle(store, pool, layout),
                watcher=watcher,
                handbrake_version=await handbrake_version(config.encode.handbrake),
                notifier=notifier,
                publisher=publisher,
                uploads=uploads,
            )
            status_line = StatusLine(store, pool, notifier)
            everyone: list[Listener] = [pool, status_line, svc.metrics, *listeners]
            if isinstance(encoder, RemoteEncoder):
                everyone.append(encoder)  # the pool's done record answers a worker's output
            unsubscribe: list[Callable[[], None]] = [store.subscribe(x) for x in everyone]
            try:
                if isinstance(encoder, RemoteEncoder):
                    encoder.start()
                pool.start()
                uploads.start_sweeper()
                if watcher is not None:
                    await watcher.start()
                yield svc
            finally:
                await uploads.close()
                await svc.stop_intake(0)
                await pool.stop(config.daemon.shutdown_timeout_s)
                await publisher.stop()
                if isinstance(encoder, RemoteEncoder):
                    await encoder.close()
                for undo in reversed(unsubscribe):
                    undo()
                await status_line.close()


async def _recover(
    store: Store, intake: Intake, layout: Layout, encoder: Encoder | RemoteEncoder, pool: Pool
) -> None:
    """Put the data folder back in order after the last run, however it ended. Remote
    encodes whose worker is still heard from are adopted, not requeued."""
    admissions = await intake.recover()  # before tmp/ is cleared: uploads wait there
    cleared = layout.clear_tmp()  # safe: the lock says no other vidd is writing there
    adopted: dict[str, object] = {}
    if isinstance(encoder, RemoteEncoder):
        adopted = dict(await encoder.adopt())
        await encoder.attempts.supersede_all_except(set(adopted))
        jobs = [job for job_id in adopted if (job := await store.get(job_id)) is not None]
        pool.adopt(jobs)
    requeued = await store.requeue_interrupted(keep=adopted)
    if admissions or requeued or cleared:
        log.info(
            "recovered: %d admission(s) finished or rolled back, %d job(s) back to the "
            "queue, %d leftover(s) removed from tmp/",
            admissions, len(requeued), cleared,
        )  # fmt: skip


@contextlib.contextmanager
def _single_instance(config: Config) -> Iterator[None]:
    """One vidd per data folder: a second one would clear the first one's tmp/ and run
    its jobs twice."""
    path = config.storage.data_dir / "vidd.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AlreadyRunning(
                f"another vidd is already using {config.storage.data_dir}"
            ) from None
        yield
    finally:
        os.close(fd)
