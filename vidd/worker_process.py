"""`vidd worker`: a Celery worker (prefork, one encode at a time by default, no prefetch,
late acks, queue `vidd`, no gossip or mingle) whose one task, `vidd.encode`, runs an
attempt with worker.py.

A stop hands the running task back: SIGTERM is remapped to Celery's cold shutdown
(REMAP_SIGTERM=SIGQUIT, set before Celery is imported), which signals the task's
process; that process stops HandBrake's group and exits without acking, and the
shutdown puts the unacked message back in the queue. The front's attempt record decides
what a redelivered message is worth (a claimed attempt is claimed once: the front
dispatches a fresh attempt when the lease lapses).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from dataclasses import dataclass
from typing import Any

from .celery_app import QUEUE, TASK_NAME, BadMessage, Dispatch, make_app
from .worker import FrontAway, Settings, run_attempt

log = logging.getLogger(__name__)

# The cold shutdown's wait for running tasks before it cancels them: an encode never
# ends in this time, so it is short; a task that is between attempts ends in it.
SOFT_SHUTDOWN_S = 1.0
HANDED_BACK = 75  # the exit code of a task process that stopped its encode on a signal
HAND_BACK_SIGNALS = (signal.SIGQUIT, signal.SIGTERM)  # the cold shutdown's, and a plain stop


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
    common = sys.modules.get("billiard.common")
    if common is not None and getattr(common, "REMAP_SIGTERM", None) != "SIGQUIT":
        raise RuntimeError("billiard was imported before vidd worker could remap SIGTERM")
    try:
        import celery  # noqa: F401  (the optional extra)
    except ImportError:
        raise NoCelery("vidd worker needs Celery: pip install 'vidd[workers]'") from None
    # Celery warns on every reconnect that version 6 will cancel running tasks on a
    # connection loss; vidd makes that choice itself (below), so the warning is noise.
    # (Celery turns its warnings into log records on "py.warnings".)
    logging.getLogger("py.warnings").addFilter(_not_the_cancel_warning)
    app = make_app(options.broker_url, max_encode_s=options.settings.max_encode_s)
    app.conf.update(
        worker_soft_shutdown_timeout=SOFT_SHUTDOWN_S,
        worker_concurrency=options.concurrency,
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        # A broker that goes away never stops an encode: the front's attempt is the record,
        # and a message redelivered meanwhile finds its attempt claimed (409) and is dropped.
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    register(app, options.settings)
    worker = app.Worker(
        hostname=f"vidd@{options.settings.name}",
        pool_cls="prefork",
        concurrency=options.concurrency,
        queues=[QUEUE],
        without_gossip=True,
        without_mingle=True,
        loglevel=options.loglevel,
        quiet=True,
    )
    worker.start()
    code: int = worker.exitcode or 0
    return code


def _not_the_cancel_warning(record: logging.LogRecord) -> bool:
    return "worker_cancel_long_running_tasks_on_connection_loss" not in record.getMessage()


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
        try:
            outcome = asyncio.run(_handed_back_on_signal(dispatch, settings))
        except FrontAway as e:  # Celery logs it: "reject requeue=True: no claim: ..."
            from celery.exceptions import Reject

            raise Reject(str(e), requeue=True) from None
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

    # Billiard's own handlers (SIGQUIT: a clean exit; SIGTERM: ignored, as it is remapped)
    # come back after the attempt: remove_signal_handler alone would leave SIG_DFL, and an
    # idle pool process would then die of the next one (SIGQUIT: with a core dump).
    previous = {sig: signal.getsignal(sig) for sig in HAND_BACK_SIGNALS}
    for sig in HAND_BACK_SIGNALS:
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
        for sig, handler in previous.items():
            loop.remove_signal_handler(sig)
            if handler is not None:
                signal.signal(sig, handler)
