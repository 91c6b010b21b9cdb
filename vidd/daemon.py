"""The daemon: signals, the HTTP runner, the systemd watchdog and process limits. It
serves the app, and on SIGTERM stops it in named stages (see shutdown.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
import sqlite3
import stat
from collections.abc import Awaitable, Callable

from aiohttp import web

from . import __version__, logs, shutdown
from .config import Config
from .notify import Notifier
from .reload import Outcome, Reloader
from .services import AlreadyRunning, Services
from .web import connections
from .web.app import create_app
from .web.errors import JsonErrorRunner
from .web.keys import GUARD, SERVICES

log = logging.getLogger(__name__)

# Exit codes of `vidd serve`: 2 for what the operator must fix before it can start.
STARTED, CANNOT_START = 0, 2


async def _serve(config: Config, verbose: bool = False) -> int:
    notifier = Notifier.from_env()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = 0
    plan = shutdown.plan(config)

    def on_signal(sig: signal.Signals) -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            log.info("received %s: shutting down", sig.name)
            notifier.stopping()
            stop.set()
            return
        log.warning("received %s again: exiting now", sig.name)
        if (svc := app.get(SERVICES)) is not None:
            svc.pool.kill_now()
        os._exit(130)

    reloads: set[asyncio.Task[Outcome]] = set()
    reloader: Reloader | None = None  # one, so that its lock keeps reloads in order

    def on_hangup() -> None:
        nonlocal reloader
        if (svc := app.get(SERVICES)) is None:
            log.warning("received SIGHUP before vidd was up: ignored")
            return
        log.info("received SIGHUP: reading %s again", svc.config.path)
        reloader = reloader or Reloader(svc, app[GUARD], verbose=verbose)
        task = asyncio.create_task(reloader.reload(), name="reload")
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    loop.add_signal_handler(signal.SIGHUP, on_hangup)

    app = create_app(config, notifier=notifier, websocket_close_s=plan.websockets.timeout_s)
    runner = JsonErrorRunner(
        app,
        handle_signals=False,
        shutdown_timeout=plan.http.timeout_s,
        **connections.handler_args(config.web),
    )
    try:
        await runner.setup()  # runs cleanup_ctx: the store opens, the pool and watcher start
    except AlreadyRunning as e:
        log.error("cannot start: %s", e)
        return CANNOT_START
    except sqlite3.OperationalError as e:  # can't open, lock or write it
        log.error(
            "cannot start: cannot use the database %s (%s); check that %s is writable "
            "and has free space",
            config.storage.db_path, e, config.storage.data_dir,
        )  # fmt: skip
        return CANNOT_START
    except sqlite3.DatabaseError as e:  # it opened, but is not (all) a database
        log.error(
            "cannot start: %s is not a usable database (%s); move it aside to start with "
            "an empty one, or restore it from a backup",
            config.storage.db_path, e,
        )  # fmt: skip
        return CANNOT_START
    except OSError as e:
        log.error("cannot start: %s", e)
        return CANNOT_START
    limits = connections.Limits(
        config.web.max_connections_per_client, connections.overall_cap(config.web)
    )
    site = connections.GuardedSite(runner, config.web.host, config.web.port, limits)
    try:
        await site.start()
    except OSError as e:
        log.error("cannot listen on %s:%d: %s", config.web.host, config.web.port, e)
        await runner.cleanup()
        return CANNOT_START
    log.info("vidd %s listening on http://%s:%d", __version__, config.web.host, config.web.port)
    notifier.ready()
    watchdog = asyncio.create_task(notifier.watchdog(_healthy(app)))
    await stop.wait()
    svc = app[SERVICES]
    # Drain while the server still answers, so the page can watch the last encodes end.
    await shutdown.run(
        plan.drain,
        asyncio.gather(svc.stop_intake(plan.drain.timeout_s), svc.pool.drain(plan.drain.timeout_s)),
    )
    await shutdown.run(plan.interrupt, svc.pool.interrupt(plan.interrupt.timeout_s))
    watchdog.cancel()
    # Then the websockets (1001), the HTTP server and the store, each within its stage.
    await runner.cleanup()
    log.info("vidd stopped")
    return STARTED


def _healthy(app: web.Application) -> Callable[[], Awaitable[bool]]:
    async def healthy() -> bool:
        svc: Services | None = app.get(SERVICES)
        if svc is None:
            return False
        problems = await svc.problems()
        for problem in problems:
            log.warning("unhealthy: %s", problem)
        return not problems

    return healthy


def _raise_fd_limit() -> None:
    """Each WebSocket client holds a descriptor: take the hard limit, not the soft 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > 65536:
        hard = 65536
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _warn_if_token_readable(config: Config) -> None:
    """A token in a file every user can read is no secret."""
    if not config.web.token:
        return
    try:
        mode = config.path.stat().st_mode
    except OSError:
        return
    if mode & stat.S_IROTH:
        log.warning(
            "%s holds web.token and every user can read it (mode %o); "
            "run: chmod o-r %s",
            config.path, stat.S_IMODE(mode), config.path,
        )  # fmt: skip


def serve(config: Config, *, verbose: bool = False, source: str = "") -> int:
    """Run vidd until a signal stops it; `source` says where the config came from."""
    logs.setup(config.daemon.log_level, verbose=verbose)
    log.info("config: %s", source or config.path)
    for warning in config.warnings:
        log.warning("%s", warning)
    _warn_if_token_readable(config)
    _raise_fd_limit()
    if not verbose:  # one line per request is noise next to one line per event
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("watchfiles").setLevel(logging.WARNING)  # "1 change detected" per event
    return asyncio.run(_serve(config, verbose))
