"""The pool: runs queued jobs through the encoder, at most `encode.max_parallel` at once,
and records how each one ended.

The oldest running job gets the CPU first: the later ones run in the background, sharing
what CPU time the first leaves (see children.set_priority), so running several at once
fills the cores HandBrake's scan, mux and single-threaded stages leave idle without
delaying the first result. When the first ends, the next moves up. (Where vidd may not
move a job up again, each later one runs at a higher nice value instead.)

A failure is recorded on the job, never raised; a store that cannot take the record is
retried with backoff, the output kept meanwhile.

Claims, cancels and deletes of running jobs are serialised by one lock, and a job's task
is never cancelled itself (only its encode is), so it always releases its slot and
records its end.

A job is done as soon as its verified video is in videos/; its poster (ffmpeg, a fraction
of a second) is made a moment later, off the slot, on a core no encode needs (see
_spare_core), and recorded as a change of the done job. The done record says the poster
is still owed (`poster_pending`), so a stop or a crash in between only delays it: the next
start makes it (or adopts the one a crash left).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from . import disk, intake, shutdown, timeouts
from .config import Config
from .dispatch import DispatchFailed
from .encoder import EncodeFailed, EncodeResult, JobEncoder, Priority
from .job import IllegalTransition, Job, JobError, MediaInfo, Status
from .layout import Layout
from .progress import Progress
from .publish import Publisher
from .store import Store

log = logging.getLogger(__name__)

# At most 4 progress writes a second for each job.
PROGRESS_INTERVAL_S = 0.25
# Even the oldest encode runs a little below vidd itself: the encodes share vidd's
# scheduling group, and the event loop (the API, the WebSocket fan-out) must not queue
# behind twenty x264 threads.
ENCODE_NICE = 5
# A store that refuses a write (locked, full, read-only) is asked again after these
# many seconds, doubling up to the cap.
RECORD_RETRY_S = 0.5
RECORD_RETRY_MAX_S = 15.0
CLAIM_RETRY_S = 5.0
ABANDON_S = 1.0  # at the end of a stop: how long records the store refuses still get
DISK_RECHECK_S = 5.0
BROKER_RECHECK_S = 2.0  # remote workers: how often a paused pool asks about the broker again
# At the interrupt stage of a stop: how long cancelled posters get to be reaped.
POSTER_STOP_S = 3.0
# A poster waits for a core no encode needs, at most this long; then it is made anyway.
# Posters are made one at a time, at the first encode's nice value: at nice 19 a poster
# was starved past its timeout on a loaded machine, and lost.
POSTER_WAIT_MAX_S = 30.0
CORES = len(os.sched_getaffinity(0))  # the cores vidd may use (a cpuset or taskset counts)


class Stop(enum.StrEnum):
    """Why a running encode is being stopped."""

    CANCEL = "cancel"  # a user: the job ends cancelled
    DELETE = "delete"  # a user deleted it: nothing to record
    SHUTDOWN = "shutdown"  # vidd is stopping: back to the queue


@dataclass
class _Running:
    job: Job
    priority: Priority = field(default_factory=Priority)
    task: asyncio.Task[None] | None = None
    encode: asyncio.Task[EncodeResult] | None = None
    stop: Stop | None = None
    recording: bool = False  # the encode has ended; only its record is left


@dataclass(frozen=True)
class _Outcome:
    """How a job ended, as the store will record it."""

    record: Callable[[], Awaitable[Any]]  # the store call
    log_line: str
    failed: bool = False
    result: EncodeResult | None = None


class Slots:
    """The pool's bound: at most `limit` slots held at once, a limit that may change at
    run time (unlike a semaphore's). One waiter: the claiming loop."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.wanted = False  # the waiter is waiting for a slot to be freed
        self._freed = asyncio.Event()

    def __repr__(self) -> str:
        return f"<Slots {self.held}/{self.limit}>"

    async def acquire(self) -> None:
        try:
            while self.held >= self.limit:
                self.wanted = True
                self._freed.clear()
                await self._freed.wait()
        finally:
            self.wanted = False
        self.held += 1

    def release(self) -> None:
        self.held -= 1
        self._freed.set()

    def resize(self, limit: int) -> None:
        self.limit = max(1, limit)
        self._freed.set()


class Pool:
    def __init__(
        self,
        config: Config,
        store: Store,
        encoder: JobEncoder,
        layout: Layout,
        guard: disk.DiskGuard | None = None,
        publisher: Publisher | None = None,
    ) -> None:
        self.config = config
        self.publisher = publisher  # results also go to storage.output_dir, when set
        self.guard = guard or disk.DiskGuard.of(config.storage)
        self.store = store
        self.encoder = encoder
        self.layout = layout
        self._running: dict[str, _Running] = {}  # oldest first
        self._slots = Slots(config.encode.max_parallel)
        self._wake = asyncio.Event()
        # For posters waiting for a spare core: set when a job leaves _running and when
        # the claiming loop has looked for the next; `_settled` is false in between, while
        # the slot a job freed is about to be taken.
        self._changed = asyncio.Event()
        self._settled = True
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._abandon = False  # the last shutdown stage: stop retrying records
        self._source_writes: set[asyncio.Task[None]] = set()  # see _source_writer
        self._posters: dict[str, asyncio.Task[None]] = {}  # job id -> its poster being made
        self._posters_closed = False  # stopping: owed posters wait for the next start
        self._poster_recovery: asyncio.Task[None] | None = None
        self._poster_turn = asyncio.Lock()  # one poster at a time
        # Held from a claim until its task is registered, and by cancels and deletes, so
        # that a cancel never falls between a claim and the start of its encode.
        self._claiming = asyncio.Lock()
        # Why new encodes wait: the disk guard, the broker (remote workers).
        self._disk_paused: str | None = None
        self._broker_paused: str | None = None
        self.unrecorded = 0  # ended jobs whose record the store has not taken yet
        self.jobs_complete = 0
        self.jobs_failed = 0
        self.encode_seconds = 0.0

    def __repr__(self) -> str:
        return (
            f"<Pool busy={self.busy}/{self.max} complete={self.jobs_complete} "
            f"failed={self.jobs_failed}>"
        )

    @property
    def paused(self) -> str | None:
        """Why new encodes wait, if they do (the disk guard first, then the broker)."""
        return self._disk_paused or self._broker_paused

    @property
    def busy(self) -> int:
        return len(self._running)

    @property
    def max(self) -> int:
        return self._slots.limit

    def resize(self, max_parallel: int) -> None:
        """A new bound (a reload): a higher one starts queued jobs now, a lower one takes
        effect as running encodes end (none is stopped for it)."""
        self._slots.resize(max_parallel)

    # The store calls these for every change: a newly queued job wakes the pool.
    def job_changed(self, job: Job, *, progress_only: bool) -> None:
        if job.status is Status.QUEUED:
            self._wake.set()

    def job_deleted(self, job_id: str) -> None:
        pass

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._run(), name="pool")
        if self.config.encode.ffmpeg:
            self._poster_recovery = asyncio.create_task(
                self._recover_posters(), name="poster-recovery"
            )

    @property
    def alive(self) -> bool:
        """False if the claiming loop has died."""
        return self._loop_task is not None and not self._loop_task.done()

    def problems(self) -> list[str]:
        """What keeps the pool from working, in words (empty when healthy)."""
        found = []
        if not self.alive and not self._stopping:
            found.append("the pool has stopped taking jobs")
        # Each running job holds a slot, and the claiming loop at most one more.
        if self._slots.held not in (self.busy, self.busy + 1):
            found.append("the pool's slot count is wrong")
        if self.unrecorded:
            found.append(f"{self.unrecorded} finished job(s) wait for the database")
        return found

    # --- claiming ------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping:
            await self._slots.acquire()
            claimed = False
            try:
                while not self._stopping and not claimed:
                    self._wake.clear()
                    if await self._disk_low() or await self._broker_down():
                        self._settle()  # nothing starts meanwhile
                        continue
                    claimed = await self._claim()
                    self._settle()
                    if not claimed:
                        await self._wake.wait()
            finally:
                if not claimed:
                    self._slots.release()

    async def _disk_low(self) -> bool:
        """The disk guard: while space is short, new encodes wait (running ones go on)."""
        try:
            self.guard.check()
        except disk.DiskFull as e:
            if self._disk_paused is None:
                log.warning("pool: new encodes paused: %s", e)
            self._disk_paused = str(e)
            await asyncio.sleep(DISK_RECHECK_S)
            return True
        if self._disk_paused is not None:
            log.info("pool: disk space is back; encodes resume")
            self._disk_paused = None
        return False

    async def _broker_down(self) -> bool:
        """Remote workers: while the broker can't be reached, nothing is dispatched (the
        jobs wait queued; uploads and the page go on)."""
        reason = await self.encoder.unavailable()
        if reason is not None:
            if self._broker_paused is None:
                log.warning("pool: new encodes paused: %s", reason)
            self._broker_paused = reason
            await asyncio.sleep(BROKER_RECHECK_S)
            return True
        if self._broker_paused is not None:
            log.info("pool: the broker answers again; encodes resume")
            self._broker_paused = None
        return False

    def adopt(self, jobs: list[Job]) -> None:
        """At start-up, before `start`: running jobs whose remote attempt goes on. Each
        takes a slot and waits for its worker again (the encoder knows the attempt)."""
        for job in jobs:
            run = _Running(job)
            self._running[job.id] = run
            self._slots.held += 1  # may exceed a lowered limit: it drains as they end
            run.task = asyncio.create_task(self._run_job(run), name=f"job-{job.id}")
        if jobs:
            log.info("pool: %d remote encode(s) adopted from the last run", len(jobs))

    async def _claim(self) -> bool:
        """Start the oldest queued job, if any. A store error is logged and retried."""
        async with self._claiming:
            try:
                job = await self.store.claim_next()
            except Exception as e:
                log.warning("pool: could not claim a job (%s); trying again in %g s", e, 5)
                await asyncio.sleep(CLAIM_RETRY_S)
                self._wake.set()  # look again, even if no new job arrives
                return False
            if job is None:
                return False
            run = _Running(job)
            self._running[job.id] = run
            run.priority = Priority(*self._rank(job.id))
            run.task = asyncio.create_task(self._run_job(run), name=f"job-{job.id}")
            return True

    def _settle(self) -> None:
        self._settled = True
        self._changed.set()

    def _rank(self, job_id: str) -> tuple[int, bool]:
        """A running job's nice value, and whether it runs in the background: the
        oldest first, each later one behind it."""
        place = list(self._running).index(job_id)
        return min(19, ENCODE_NICE + place * self.config.encode.nice_step), place > 0

    def _reprioritise(self) -> None:
        for job_id, run in self._running.items():
            rank = self._rank(job_id)
            if run.priority() != rank:
                # The encode takes the change even while it is still starting.
                run.priority.nice, run.priority.background = rank
                self.encoder.renice(job_id, run.priority)

    # --- one job -------------------------------------------------------------------

    async def _run_job(self, run: _Running) -> None:
        started = time.monotonic()
        try:
            if run.stop is None:
                run.encode = asyncio.create_task(
                    self.encoder.run(
                        run.job,
                        self._progress_writer(run.job.id),
                        priority=run.priority,
                        on_source=self._source_writer(run.job.id),
                    )
                )
                await asyncio.wait([run.encode])
            run.recording = True
            elapsed = time.monotonic() - started
            outcome = self._outcome(run, elapsed)
            self.encode_seconds += elapsed
            if outcome.failed:
                self.jobs_failed += 1
            elif outcome.result is not None:
                self.jobs_complete += 1
            level = logging.WARNING if outcome.failed else logging.INFO
            log.log(level, "job %s: %s after %.1f s", run.job.id, outcome.log_line, elapsed)
            await self._record(run, outcome)
        finally:
            # Only this run's entry: a job requeued by its own outcome may already have
            # been claimed again by a newer run.
            if self._running.get(run.job.id) is run:
                del self._running[run.job.id]
            self._reprioritise()
            # A claiming loop waiting for a slot takes this one: the count settles once it
            # has looked for a queued job. (Otherwise it waits for a new job: settled.)
            self._settled = not self._slots.wanted
            self._slots.release()
            self._changed.set()

    def _outcome(self, run: _Running, elapsed: float) -> _Outcome:
        job_id, encode, stop = run.job.id, run.encode, run.stop
        if encode is None or encode.cancelled():
            if stop is Stop.SHUTDOWN and self.encoder.kept(job_id):
                return _Outcome(_nothing, "left to its remote worker; adopted at the next start")
            if stop is Stop.SHUTDOWN:
                return _Outcome(
                    lambda: self.store.requeue(job_id), "interrupted by shutdown, back to the queue"
                )
            if stop is Stop.DELETE:
                return _Outcome(_nothing, "deleted")
            return _Outcome(lambda: self.store.cancel(job_id, was=Status.RUNNING), "cancelled")
        e = encode.exception()
        if isinstance(e, DispatchFailed):  # the broker: back to the queue, in its place
            return _Outcome(
                lambda: self.store.requeue(job_id), f"not dispatched ({e}), back to the queue"
            )
        if isinstance(e, EncodeFailed) and e.reject:
            # Queued unprobed (the intake left the scan to the encode): not a video after
            # all, so it ends as the probe would have ended it, kept in rejected/.
            job = run.job
            return _Outcome(
                lambda: intake.reject_scanned(self.store, self.layout, job, e.message),
                f"rejected by its encode's scan: {e.message}",
            )
        if isinstance(e, EncodeFailed):
            error = JobError(e.code, e.message)
            return _Outcome(
                lambda: self.store.fail(job_id, error, log_tail=e.log_tail),
                f"failed ({e.code}): {e.message}",
                failed=True,
            )
        if e is not None:  # a bug, but a job failing must never take the pool down
            log.error("job %s: internal error", job_id, exc_info=e)
            internal = JobError("internal", f"vidd failed: {e}")
            return _Outcome(lambda: self.store.fail(job_id, internal), "failed", failed=True)
        result = encode.result()
        publish = self.publisher is not None and self.publisher.enabled
        how = "repackaged" if result.repackaged else "encoded"
        return _Outcome(
            lambda: self.store.finish(
                job_id,
                result.output,
                poster=False,
                log_tail=result.log_tail,
                repackaged=result.repackaged,
                publish=publish,
                poster_pending=bool(self.config.encode.ffmpeg),
                source=result.source,
            ),
            f"done ({result.output.size} bytes, {how})",
            result=result,
        )

    async def _record(self, run: _Running, outcome: _Outcome) -> None:
        """Write how the job ended; while the store refuses, keep the output and retry."""
        job = run.job
        delay = RECORD_RETRY_S
        counted = False
        try:
            while True:
                try:
                    await outcome.record()
                    break
                except (KeyError, IllegalTransition) as e:
                    # Deleted meanwhile: its output belongs to nobody.
                    log.info("job %s: not recorded: %s", job.id, e)
                    if outcome.result is not None:
                        for path in self.layout.outputs(job.id):
                            path.unlink(missing_ok=True)
                    return
                except Exception as e:
                    if self._abandon:
                        log.error("job %s: left for the next start: %s", job.id, e)
                        return
                    if not counted:
                        counted = True
                        self.unrecorded += 1
                    log.warning(
                        "job %s: the database refused its end (%s); retrying in %.1f s",
                        job.id, e, delay,
                    )  # fmt: skip
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RECORD_RETRY_MAX_S)
        finally:
            if counted:
                self.unrecorded -= 1
        if outcome.result is not None and not self.config.storage.keep_sources:
            self.layout.source(job).unlink(missing_ok=True)  # only now: output verified
        if outcome.result is not None and self.publisher is not None:
            self.publisher.later(job.id)
        if outcome.result is not None and self.config.encode.ffmpeg:
            self._poster_later(job.id, outcome.result.output.duration)

    # --- posters, after done ------------------------------------------------------

    def _poster_later(self, job_id: str, duration: float, *, wait: bool = True) -> None:
        """Make the poster in a task; `wait` for a spare core first (see _spare_core)."""
        if self._posters_closed or job_id in self._posters:
            return  # still owed in the store: the next start makes it
        task = asyncio.create_task(self._poster(job_id, duration, wait), name=f"poster-{job_id}")
        self._posters[job_id] = task
        task.add_done_callback(lambda _: self._posters.pop(job_id, None))

    async def _poster(self, job_id: str, duration: float, wait: bool) -> None:
        """Make a done job's poster, then record it (the hub publishes the job again)."""
        try:
            if wait:
                await self._spare_core()
            async with self._poster_turn:
                made = await self.encoder.make_poster(job_id, duration, nice=ENCODE_NICE)
            await self.store.poster_made(job_id, made)
        except KeyError:  # deleted meanwhile: the poster belongs to nobody
            self.layout.poster(job_id).unlink(missing_ok=True)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # still owed in the store: the next start tries again
            log.warning("job %s: poster not recorded: %s", job_id, e)

    async def _spare_core(self) -> None:
        """Wait, at most POSTER_WAIT_MAX_S, until fewer encodes run here than there are
        cores. An encode keeps about one core busy or more, so until then a poster would
        only slow them: in a batch (more files than cores) it waits for the tail, where
        the last encode leaves a core idle."""
        if not self.encoder.runs_here:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + POSTER_WAIT_MAX_S
        while not (self._settled and len(self._running) < CORES):
            left = deadline - loop.time()
            if left <= 0:
                return
            self._changed.clear()
            await timeouts.wait_event(self._changed, left)

    async def _recover_posters(self) -> None:
        """At start-up: the posters a stop or a crash left owed. One a crash left made
        (renamed into videos/, not yet recorded) is taken as it is."""
        try:
            owed = await self.store.posters_pending()
        except Exception as e:
            log.warning("pool: could not list the posters still owed: %s", e)
            return
        if owed:
            log.info("pool: making %d poster(s) a stop or a crash left owed", len(owed))
        for job in owed:
            if self._posters_closed:
                return
            image = self.layout.poster(job.id)
            try:
                if image.is_file() and image.stat().st_size > 0:
                    await self.store.poster_made(job.id, True)
                    continue
            except KeyError:
                continue
            except Exception as e:
                log.warning("job %s: poster not recorded: %s", job.id, e)
                continue
            duration = job.output.duration if job.output is not None else 0.0
            # Not waiting for a spare core: made one at a time (_poster_turn), they cost
            # little.
            self._poster_later(job.id, duration, wait=False)

    async def _close_posters(self) -> None:
        """Stop making posters; the owed ones stay owed for the next start."""
        self._posters_closed = True
        tasks = list(self._posters.values())
        if self._poster_recovery is not None:
            tasks.append(self._poster_recovery)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=POSTER_STOP_S)

    def _progress_writer(self, job_id: str) -> Callable[[Progress], None]:
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
                write = partial(self.store.set_progress, job_id, p.progress, p.fps, p.eta_s)
                pending.append(asyncio.create_task(self._best_effort(job_id, "progress", write)))

        return on_progress

    def _source_writer(self, job_id: str) -> Callable[[MediaInfo], None]:
        """For a job queued unprobed: its source's facts go to the page as soon as its
        encode's scan finds them, not only with the done record."""

        def on_source(info: MediaInfo) -> None:
            write = partial(self.store.set_source, job_id, info)
            task = asyncio.create_task(self._best_effort(job_id, "source facts", write))
            self._source_writes.add(task)
            task.add_done_callback(self._source_writes.discard)

        return on_source

    async def _best_effort(
        self, job_id: str, what: str, write: Callable[[], Awaitable[object]]
    ) -> None:
        """A running job's progress or source facts: the done record has them too, and
        the end is what must be written, so a write the store refuses is only logged."""
        try:
            await write()
        except Exception as e:
            log.debug("job %s: %s not written: %s", job_id, what, e)

    # --- stopping a job ----------------------------------------------------------

    async def cancel(self, job_id: str) -> bool:
        """Cancel a queued or running job; wait until its encode is reaped and its end
        recorded. False when its state doesn't allow it; KeyError when there is none."""
        async with self._claiming:
            run = self._running.get(job_id)
            if run is None:
                try:
                    await self.store.cancel(job_id, was=Status.QUEUED)
                    return True
                except IllegalTransition:
                    return False
            if run.recording:
                return False  # it has ended already; its record is on its way
            self._stop(run, Stop.CANCEL)
        await self._wait(run)
        return True

    async def delete(self, job_id: str) -> bool:
        """Stop the job if it runs and delete its record, with no claim in between.
        False if there was no such job."""
        async with self._claiming:
            run = self._running.get(job_id)
            if run is not None:
                self._stop(run, Stop.DELETE)
            deleted = await self.store.delete(job_id)
        if run is not None:
            await self._wait(run)
        return deleted

    def _stop(self, run: _Running, why: Stop) -> None:
        if run.stop is None or why is Stop.DELETE:
            run.stop = why
        if run.stop is Stop.SHUTDOWN:
            self.encoder.detach(run.job.id)  # a claimed remote encode goes on
        if run.encode is not None:
            run.encode.cancel()

    async def _wait(self, run: _Running) -> None:
        if run.task is not None:
            await asyncio.wait([run.task])

    # --- stopping the pool ---------------------------------------------------------

    async def drain(self, timeout_s: float) -> None:
        """Take no new jobs; give running encodes up to `timeout_s` to finish."""
        self._stopping = True
        self._wake.set()
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        deadline = time.monotonic() + timeout_s
        tasks = [r.task for r in self._running.values() if r.task is not None]
        if self.encoder.outlives_vidd:
            tasks = []  # remote encodes outlive the front: the next start adopts them
        if tasks:
            log.info("pool: waiting up to %.0f s for %d encode(s)", timeout_s, len(tasks))
            await asyncio.wait(tasks, timeout=timeout_s)
        posters = list(self._posters.values())  # the finished encodes' posters, if in time
        if posters and deadline > time.monotonic():
            await asyncio.wait(posters, timeout=deadline - time.monotonic())

    async def interrupt(self, timeout_s: float) -> None:
        """Stop the encodes still running and put their jobs back in the queue, all within
        `timeout_s` (its last second for records the store still refuses)."""
        self._stopping = True
        runs = list(self._running.values())
        for run in runs:
            self._stop(run, Stop.SHUTDOWN)
        tasks = [r.task for r in runs if r.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=max(0.0, timeout_s - ABANDON_S))
            if pending:  # only records the store refuses are left: the next start requeues
                self._abandon = True
                await asyncio.wait(pending, timeout=ABANDON_S)
        await self._close_posters()

    async def stop(self, timeout_s: float) -> None:
        """Drain, then interrupt (idempotent), the interrupt within its shutdown stage."""
        await self.drain(timeout_s)
        await self.interrupt(shutdown.plan(self.config).interrupt.timeout_s)

    def kill_now(self) -> None:
        """A forced exit: kill every encode at once (their jobs are requeued at next start)."""
        self.encoder.kill_all()


async def _nothing() -> None:
    pass
