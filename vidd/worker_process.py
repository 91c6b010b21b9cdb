"""`vidd worker`: a Celery worker (prefork, one encode at a time by default, no prefetch,
late acks, queue `vidd`, no gossip or mingle) whose one task, `vidd.encode`, runs an
attempt with worker.py.

A stop hands the running task back: SIGTERM is remapped to Celery's cold shutdown
(REMAP_SIGTERM=SIGQUIT, set before Celery is imported), which cancels the task; the
task's process then stops HandBrake's group and exits without acking, so the message
goes back to the queue (`task_reject_on_worker_lost`). The front's attempt record decides
what a redelivered message is worth (a claimed attempt is claimed once).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass
from typing import Any

from .celery_app import TASK_NAME, BadMessage, Dispatch, make_app
from .worker import Settings, run_attempt

log = logging.getLogger(__name__)

# The cold shutdown's wait for running tasks before it cancels them: an encode never
# ends in this time, so it is short; a task that is between attempts ends in it.
SOFT_SHUTDOWN_S = 1.0
HANDED_BACK = 75  # the exit code of a task process that stopped its encode on a signal


class NoCelery(Exception):
    """The `workers` extra is not installed."""


@dataclass(frozen=True)
class Options:
    broker_url: str
    settings: Settings
    concurrency: int = 1
    loglevel: str = "INFO"


def run(options: Options) -> int:
    """Run the worker until it is stopped; returns its exit code."""
    os.environ["REMAP_SIGTERM"] = "SIGQUIT"  # read by billiard when it is first imported
    try:
        import celery  # noqa: F401  (the optional extra)
    except ImportError:
        raise NoCelery("vidd worker needs Celery: pip install 'vidd[workers]'") from None
    app = make_app(options.broker_url, max_encode_s=options.settings.max_encode_s)
    app.conf.update(
        worker_soft_shutdown_timeout=SOFT_SHUTDOWN_S,
        worker_concurrency=options.concurrency,
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
    )
    register(app, options.settings)
    worker = app.Worker(
        hostname=f"vidd@{options.settings.name}",
        pool_cls="prefork",
        concurrency=options.concurrency,
        queues=["vidd"],
        without_gossip=True,
        without_mingle=True,
        loglevel=options.loglevel,
        quiet=True,
    )
    worker.start()
    code: int = worker.exitcode or 0
    return code


def register(app: Any, settings: Settings) -> Any:
    """Add the task `vidd.encode` to `app`, running attempts with these settings."""

    def encode(*args: Any, **kwargs: Any) -> None:
        try:
            if args:
                raise BadMessage("positional arguments")
            dispatch = Dispatch.from_kwargs(kwargs)
        except BadMessage as e:
            log.warning("dropped a message that is not a vidd attempt: %s", e)
            return
        outcome = asyncio.run(_handed_back_on_signal(dispatch, settings))
        log.info("attempt %s: %s", dispatch.attempt, outcome)

    return app.task(name=TASK_NAME, acks_late=True, reject_on_worker_lost=True)(encode)


async def _handed_back_on_signal(dispatch: Dispatch, settings: Settings) -> str:
    """run_attempt; on the cancel of a cold shutdown (SIGQUIT, or SIGTERM) its HandBrake
    is stopped and reaped, then this process exits unacked: the message is requeued."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    signalled: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        signalled.append(sig)
        task.cancel()

    for sig in (signal.SIGQUIT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        return await run_attempt(dispatch, settings)
    except asyncio.CancelledError:
        if not signalled:
            raise
        log.warning(
            "attempt %s: %s: encode stopped, handing the task back",
            dispatch.attempt, signalled[0].name,
        )  # fmt: skip
        logging.shutdown()
        os._exit(HANDED_BACK)
    finally:
        for sig in (signal.SIGQUIT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
