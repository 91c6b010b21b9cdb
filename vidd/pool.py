"""The pool: runs queued jobs through the encoder, at most `encode.max_parallel` at once.

The oldest running job gets the CPU first: each later one runs at a higher nice value,
so running several at once fills the cores HandBrake's scan and mux phases leave idle
without delaying the first result. A failure is recorded on the job, never raised.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from .config import Config
from .encoder import EncodeFailed, Encoder
from .job import IllegalTransition, Job, JobError, Status
from .progress import Progress
from .store import Store

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.25
# Even the oldest encode runs a little below vidd itself: the encodes share vidd's
# scheduling group, and the event loop (the API, the WebSocket fan-out) must not queue
# behind twenty x264 threads.
ENCODE_NICE = 5  # at most 4 progress updates a second for each job


class Pool:
    def __init__(self, config: Config, store: Store, encoder: Encoder) -> None:
        self.config = config
        self.store = store
        self.encoder = encoder
        self.max = config.encode.max_parallel
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._order: list[str] = []  # running job ids, oldest first
        self._slots = asyncio.Semaphore(self.max)
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._requeue_on_cancel: set[str] = set()
        # Held from a claim until its task is registered, so a cancel never falls in between.
        self._claiming = asyncio.Lock()
        self.jobs_complete = 0
        self.jobs_failed = 0
        self.encode_seconds = 0.0

    def __repr__(self) -> str:
        return (
            f"<Pool busy={self.busy}/{self.max} complete={self.jobs_complete} "
            f"failed={self.jobs_failed}>"
        )

    @property
    def busy(self) -> int:
        return len(self.tasks)

    # The store calls these for every change: a newly queued job wakes the pool.
    def job_changed(self, job: Job, *, progress_only: bool) -> None:
        if job.status is Status.QUEUED:
            self._wake.set()

    def job_deleted(self, job_id: str) -> None:
        pass

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._run(), name="pool")

    @property
    def alive(self) -> bool:
        """False if the claiming loop has died: the watchdog must then stop being fed."""
        return self._loop_task is not None and not self._loop_task.done()

    async def _run(self) -> None:
        while not self._stopping:
            await self._slots.acquire()
            claimed = False
            try:
                while not self._stopping and not claimed:
                    self._wake.clear()
                    claimed = await self._claim()
                    if not claimed:
                        await self._wake.wait()
            finally:
                if not claimed:
                    self._slots.release()

    async def _claim(self) -> bool:
        """Start the oldest queued job, if any. A store error is logged and retried."""
        async with self._claiming:
            try:
                job = await self.store.claim_next()
            except Exception:
                log.exception("pool: could not claim a job; trying again in 5 s")
                await asyncio.sleep(5)
                self._wake.set()  # look again, even if no new job arrives
                return False
            if job is None:
                return False
            self._order.append(job.id)
            self.tasks[job.id] = asyncio.create_task(self._run_job(job), name=f"job-{job.id}")
            return True

    def _nice_for(self, job_id: str) -> int:
        place = self._order.index(job_id)
        return min(19, ENCODE_NICE + place * self.config.encode.nice_step)

    async def _run_job(self, job: Job) -> None:
        started = time.monotonic()
        last_sent = 0.0
        pending: list[asyncio.Task[Any]] = []

        def on_progress(p: Progress) -> None:
            nonlocal last_sent
            t = time.monotonic()
            if t - last_sent < PROGRESS_INTERVAL_S:  # "done" sets 1.0 itself
                return
            last_sent = t
            pending[:] = [x for x in pending if not x.done()]
            if len(pending) < 2:  # never pile up writes behind a slow disk
                pending.append(
                    asyncio.create_task(self.store.set_progress(job.id, p.progress, p.fps, p.eta_s))
                )

        try:
            result = await self.encoder.run(job, on_progress, nice=self._nice_for(job.id))
        except EncodeFailed as e:
            elapsed = time.monotonic() - started
            self.encode_seconds += elapsed
            self.jobs_failed += 1
            log.warning("job %s: failed (%s) after %.1f s: %s", job.id, e.code, elapsed, e.message)
            await self._finish(
                job.id, Status.FAILED, error=JobError(e.code, e.message), log_tail=e.log_tail
            )
        except asyncio.CancelledError:
            elapsed = time.monotonic() - started
            self.encode_seconds += elapsed
            if job.id in self._requeue_on_cancel:
                log.info(
                    "job %s: interrupted by shutdown after %.1f s, back to the queue",
                    job.id,
                    elapsed,
                )
                await self._finish(job.id, Status.QUEUED)
            else:
                log.info("job %s: cancelled after %.1f s", job.id, elapsed)
                await self._finish(
                    job.id, Status.CANCELLED, error=JobError("cancelled", "cancelled by a user")
                )
        except Exception as e:  # a bug, but a job failing must never take the pool down
            self.jobs_failed += 1
            log.exception("job %s: internal error", job.id)
            await self._finish(
                job.id, Status.FAILED, error=JobError("internal", f"vidd failed: {e}")
            )
        else:
            elapsed = time.monotonic() - started
            self.encode_seconds += elapsed
            self.jobs_complete += 1
            log.info("job %s: done in %.1f s (%d bytes)", job.id, elapsed, result.output.size)
            recorded = await self._finish(
                job.id,
                Status.DONE,
                output=result.output,
                poster=result.poster,
                log_tail=result.log_tail,
            )
            if not recorded:  # deleted meanwhile: its output belongs to nobody
                for path in self.encoder.outputs(job.id):
                    path.unlink(missing_ok=True)
            elif not self.config.storage.keep_sources:  # only now: the output is verified
                (self.config.storage.sources_dir / job.source_file).unlink(missing_ok=True)
        finally:
            for t in pending:
                t.cancel()
            self.tasks.pop(job.id, None)
            self._requeue_on_cancel.discard(job.id)
            self._order.remove(job.id)
            self._reprioritise()
            self._slots.release()

    async def _finish(self, job_id: str, status: Status, **fields: Any) -> bool:
        """Record how a job ended; False if it could not be (deleted meanwhile, or the
        store is gone at shutdown: the job is then requeued at the next start)."""
        try:
            await self.store.transition(job_id, status, **fields)
            return True
        except (KeyError, IllegalTransition) as e:
            log.info("job %s: not recorded as %s: %s", job_id, status, e)
        except Exception:
            log.exception("job %s: could not record it as %s", job_id, status)
        return False

    def _reprioritise(self) -> None:
        for job_id in self._order:
            self.encoder.renice(job_id, self._nice_for(job_id))

    async def cancel(self, job_id: str) -> bool:
        """Cancel a running job and wait until its process is reaped. False if not running.

        Only the pool moves a running job to cancelled: it knows whether an encode runs."""
        async with self._claiming:
            task = self.tasks.get(job_id)
        if task is None:
            return False
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return True

    async def stop(self, timeout_s: float) -> None:
        """Take no new jobs; wait up to `timeout_s` for running encodes, then requeue them."""
        self._stopping = True
        self._wake.set()
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        running = list(self.tasks.values())
        if running:
            log.info("pool: waiting up to %.0f s for %d encode(s)", timeout_s, len(running))
            await asyncio.wait(running, timeout=timeout_s)
            still = dict(self.tasks)
            for job_id, task in still.items():
                self._requeue_on_cancel.add(job_id)
                task.cancel()
            await asyncio.gather(*still.values(), return_exceptions=True)

    def kill_now(self) -> None:
        """A forced exit: kill every encode at once (their jobs are requeued at next start)."""
        self.encoder.kill_all()
