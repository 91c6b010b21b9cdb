"""The daemon: builds the services in dependency order, serves them over HTTP, and stops
them in stages (stop intake, drain encodes up to a deadline, requeue the rest).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import resource
import shutil
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from aiohttp import web

from . import __version__, children, logs
from .config import Config
from .encoder import Encoder
from .intake import Intake
from .job import Job
from .notify import Notifier
from .pool import Pool
from .progress import parse_blocks
from .store import Store
from .watcher import Watcher

log = logging.getLogger(__name__)


@dataclass
class Services:
    """Everything the web layer needs, started and stopped together."""

    config: Config
    store: Store
    intake: Intake
    encoder: Encoder
    pool: Pool
    watcher: Watcher | None
    handbrake_version: str
    notifier: Notifier
    started_at: float = field(default_factory=time.monotonic)

    @property
    def uptime_s(self) -> float:
        return time.monotonic() - self.started_at

    @property
    def watching(self) -> bool:
        return self.watcher is not None and self.watcher.watching

    async def stop(self) -> None:
        """Stop intake and drain the pool (idempotent): both at once, so the whole stop
        fits in shutdown_timeout_s plus the kill grace."""
        stops = [self.pool.stop(self.config.daemon.shutdown_timeout_s)]
        if self.watcher is not None:
            stops.append(self.watcher.stop())
        await asyncio.gather(*stops)


# Where the web app keeps the services; the app's cleanup_ctx fills it.
SERVICES: web.AppKey[Services] = web.AppKey("services", Services)


def make_dirs(config: Config) -> None:
    s = config.storage
    for d in (s.data_dir, s.inbox_dir, s.sources_dir, s.videos_dir, s.rejected_dir, s.tmp_dir):
        d.mkdir(parents=True, exist_ok=True)


def clear_tmp(config: Config) -> int:
    """Leftovers in tmp/ belong to encodes and uploads that died with the last run."""
    removed = 0
    for entry in config.storage.tmp_dir.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed += 1
    return removed


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


class _StatusLine:
    """Keeps systemd's STATUS= line ("1 encoding, 4 queued") in step with the store."""

    def __init__(self, services: Services) -> None:
        self.services = services
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
            counts = await self.services.store.counts()
            busy = self.services.pool.busy
            self.services.notifier.status(f"{busy} encoding, {counts['queued']} queued")


@contextlib.asynccontextmanager
async def services(config: Config, notifier: Notifier | None = None) -> AsyncIterator[Services]:
    """Open the store, recover from the last run, start the pool and the watcher."""
    make_dirs(config)
    with _single_instance(config):
        async with _opened_store(config) as store:
            async with _running(config, store, notifier) as svc:
                yield svc


class AlreadyRunning(Exception):
    pass


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


@contextlib.asynccontextmanager
async def _opened_store(config: Config) -> AsyncIterator[Store]:
    cleared = clear_tmp(config)  # safe: the lock says no other vidd is writing there
    store = Store(config.storage.db_path)
    await store.open()
    try:
        requeued = await store.requeue_running()
        if requeued or cleared:
            log.info(
                "recovered: %d job(s) back to the queue, %d leftover(s) removed from tmp/",
                len(requeued),
                cleared,
            )
        yield store
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def _running(
    config: Config, store: Store, notifier: Notifier | None
) -> AsyncIterator[Services]:
    """Build the pool, the intake and the watcher on an open store, and start them."""
    encoder = Encoder(config)
    pool = Pool(config, store, encoder)
    intake = Intake(config, store)
    watcher = Watcher(config, intake) if config.watch.enabled else None
    svc = Services(
        config=config,
        store=store,
        intake=intake,
        encoder=encoder,
        pool=pool,
        watcher=watcher,
        handbrake_version=await handbrake_version(config.encode.handbrake),
        notifier=notifier or Notifier.from_env(),
    )
    store.listeners.append(pool)
    store.listeners.append(_StatusLine(svc))
    try:
        pool.start()
        if watcher is not None:
            await watcher.start()
        yield svc
    finally:
        await svc.stop()


async def _serve(config: Config) -> int:
    from .web.app import create_app

    notifier = Notifier.from_env()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = 0

    def on_signal(sig: signal.Signals) -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            log.info("received %s: shutting down", sig.name)
            notifier.stopping()
            stop.set()
            return
        log.warning("received %s again: exiting now", sig.name)
        app_services = app.get(SERVICES)
        if app_services is not None:
            app_services.pool.kill_now()
        os._exit(130)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)

    app = create_app(config, notifier=notifier)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=5.0)
    try:
        await runner.setup()  # runs cleanup_ctx: the store opens, the pool and watcher start
    except (AlreadyRunning, OSError) as e:
        log.error("cannot start: %s", e)
        return 1
    site = web.TCPSite(runner, config.web.host, config.web.port)
    try:
        await site.start()
    except OSError as e:
        log.error("cannot listen on %s:%d: %s", config.web.host, config.web.port, e)
        await runner.cleanup()
        return 1
    log.info("vidd %s listening on http://%s:%d", __version__, config.web.host, config.web.port)
    notifier.ready()
    watchdog = asyncio.create_task(notifier.watchdog(_healthy(app)))
    await stop.wait()
    # Drain while the server still answers, so the page can watch the last encodes end.
    await app[SERVICES].stop()
    watchdog.cancel()
    await runner.cleanup()  # stops accepting, closes sockets, closes the store
    log.info("vidd stopped")
    return 0


def _healthy(app: web.Application) -> Callable[[], Awaitable[bool]]:
    async def healthy() -> bool:
        svc = app.get(SERVICES)
        if svc is None or not svc.pool.alive:
            return False
        try:
            return await asyncio.wait_for(svc.store.ping(), 5)
        except Exception:
            return False

    return healthy


def _raise_fd_limit() -> None:
    """Each WebSocket client holds a descriptor: take the hard limit, not the soft 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > 65536:
        hard = 65536
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def serve(config: Config, *, verbose: bool = False) -> int:
    logs.setup(config.daemon.log_level, verbose=verbose)
    _raise_fd_limit()
    if not verbose:  # one line per request is noise next to one line per event
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("watchfiles").setLevel(logging.WARNING)  # "1 change detected" per event
    return asyncio.run(_serve(config))
