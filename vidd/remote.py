"""The remote encoder: what the pool runs a job with when `workers.mode = "celery"`.

It has the local Encoder's interface (run, renice, kill_all, make_poster), but `run`
dispatches an *attempt* (attempts.py) through the broker and waits for what the worker
says over HTTP (web/workers.py calls claim, heartbeat, log, accept_output and fail
here). The front stays the record of truth: a worker's word counts only while its
attempt is live, a claimed attempt with no heartbeat for `lease_s` is lost and a fresh
one dispatched (up to `max_attempts`), and the output is verified here as a local
encode's is (mp4 index, video track, duration) before it goes to videos/.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn

from . import mp4, probe, timeouts
from .attempts import LIVE, Attempt, Attempts, State
from .broker import BrokerWatch
from .celery_app import Dispatch
from .config import Config
from .dispatch import Dispatcher, DispatchFailed
from .encoder import NOT_VIDEO, EncodeFailed, Encoder, EncodeResult, Priority, check_duration
from .job import Job, MediaInfo, Status, now
from .layout import Layout
from .progress import Progress
from .store import Store

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.25  # what a worker is told: at most 4 progress posts a second
RECORD_WAIT_S = 60.0  # how long an output's answer waits for the pool's done record
MAX_LOG_TAIL = 64 * 1024
SEEN_WINDOW_S = 3600.0  # GET /api/workers lists workers heard from within this
UNCLAIMED_WARN_S = 300.0  # an attempt unclaimed this long gets one line in the log


class Unauthorized(Exception):
    """Unknown attempt or wrong token: one answer for both (no oracle)."""


class NotLive(Exception):
    """The attempt is not (or no longer) its job's live one: `superseded`, `cancelled`
    or `claimed` (already, by another process)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class StopAttempt(Exception):
    """The worker must stop now (410): superseded, cancelled or its lease lapsed."""


class BadOutput(EncodeFailed):
    """A worker's output that fails verification: its job fails with it (422 to the worker)."""


@dataclass
class _Waiting:
    """An attempt a run() waits on, and what its worker said so far."""

    attempt: Attempt
    job: Job
    outcome: asyncio.Future[EncodeResult | None]  # None: lost or handed back
    on_progress: Callable[[Progress], None]
    last_beat: float | None = None  # monotonic; None until claimed
    beat_written: float = 0.0  # monotonic of the last heartbeat_at write
    log_tail: str = ""
    worker: str | None = None
    probed: bool = False  # the job's source facts were found here, not at intake


@dataclass(frozen=True)
class WorkerSeen:
    name: str
    job: str | None
    last_seen_s: float


class RemoteEncoder:
    """Runs jobs on remote workers; `waiting` maps an attempt id to what waits on it."""

    def __init__(
        self,
        config: Config,
        layout: Layout,
        store: Store,
        dispatcher: Dispatcher,
        local: Encoder,
    ) -> None:
        self.local = local  # posters are made here, by the local ffmpeg
        self._config = config
        self.layout = layout
        self.store = store
        self.dispatcher = dispatcher
        self.attempts = Attempts(store)
        self.waiting: dict[str, _Waiting] = {}
        self._adopted: dict[str, Attempt] = {}  # job id -> its claimed attempt, at start
        self._detached: set[str] = set()  # job ids stopped by a shutdown: left running
        self._kept: set[str] = set()  # of those, the ones whose worker goes on
        self._released: set[str] = set()  # attempt ids their worker handed back
        self._recorded: dict[str, asyncio.Future[Job | None]] = {}
        self._seen: dict[str, tuple[str | None, float]] = {}  # worker -> (job, monotonic)
        self.broker = BrokerWatch(dispatcher)
        self._background: set[asyncio.Task[Any]] = set()
        self.lost = 0

    def __repr__(self) -> str:
        return f"<RemoteEncoder waiting={len(self.waiting)} lost={self.lost}>"

    @property
    def config(self) -> Config:
        return self._config

    @config.setter
    def config(self, config: Config) -> None:
        """A reload's new config reaches the local encoder (posters) too."""
        self._config = config
        self.local.config = config

    @property
    def lease_s(self) -> float:
        return self.config.workers.lease_s

    # --- the broker ----------------------------------------------------------------

    def start(self) -> None:
        """Watch the broker from now on (a ping every broker.CHECK_S, in a thread)."""
        self.broker.start()

    async def close(self) -> None:
        await self.broker.close()
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.dispatcher.close()

    async def unavailable(self) -> str | None:
        """Why no job can be dispatched now (the broker's last ping), or None."""
        return await self.broker.unavailable()

    @property
    def broker_state(self) -> str | None:
        """ "up", "down", or None before the first ping (never waits)."""
        return self.broker.state

    # --- the pool's side: the Encoder interface ------------------------------------

    outlives_vidd = True  # a claimed attempt goes on while vidd stops; the next start adopts it
    runs_here = False  # the workers' CPU, not this machine's (posters are made here)

    def renice(self, job_id: str, priority: Priority) -> bool:
        return False  # the worker's HandBrake is not ours to renice

    def kill_all(self) -> None:
        """A forced exit: remote encodes go on; the next start adopts them."""

    async def make_poster(self, job_id: str, duration: float, *, nice: int = 0) -> bool:
        return await self.local.make_poster(job_id, duration, nice=nice)

    def detach(self, job_id: str) -> None:
        """vidd is stopping: the job's run() is about to be cancelled, but its worker
        should go on (the next start adopts a claimed attempt)."""
        self._detached.add(job_id)

    def kept(self, job_id: str) -> bool:
        """Whether a detached job's worker goes on (its job stays running in the store)."""
        return job_id in self._kept

    async def adopt(self) -> dict[str, Attempt]:
        """At start-up, before the pool runs: running jobs whose claimed attempt was heard
        from within lease_s. The pool's run() of each waits for that attempt again."""
        self._adopted = await self.attempts.adoptable(self.lease_s)
        return dict(self._adopted)

    async def run(
        self,
        job: Job,
        on_progress: Callable[[Progress], None],
        *,
        priority: Priority | None = None,
        on_source: Callable[[MediaInfo], None] | None = None,
    ) -> EncodeResult:
        """Dispatch the job (or wait for its adopted attempt) until a worker's verified
        output is in videos/. Raises EncodeFailed, or DispatchFailed (the pool requeues)."""
        lost = 0
        attempt = self._adopted.pop(job.id, None)
        probed = job.source is None  # its facts come from here: the record takes them
        job = await self._with_source(job)
        while True:
            if attempt is None:
                attempt = await self._dispatch(job)
            result = await self._wait_for(job, attempt, on_progress, probed=probed)
            if result is not None:
                return result
            lost += 1
            self.lost += 1
            self._later(self.dispatcher.revoke(attempt.id))
            with contextlib.suppress(Exception):  # the name it was claimed by, for the log
                attempt = await self.attempts.get(attempt.id) or attempt
            if attempt.id in self._released:
                self._released.discard(attempt.id)
                why = "handed it back (stopping)"
            else:
                why = f"lost (no heartbeat for {self.lease_s:g} s)"
            log.warning(
                "job %s: worker %s %s, attempt %d of %d",
                job.id, attempt.worker or "?", why, lost, self.config.workers.max_attempts,
            )  # fmt: skip
            if lost >= self.config.workers.max_attempts:
                raise EncodeFailed(
                    "workers_lost",
                    f"{lost} worker(s) stopped answering mid-encode "
                    f"(no heartbeat for {self.lease_s:g} s each)",
                )
            with contextlib.suppress(Exception):
                await self.store.set_worker(job.id, None)
            attempt = None

    async def _with_source(self, job: Job) -> Job:
        """The job with its source's facts: a worker needs them (size, duration) and the
        output is checked against them. Normally the intake probed it; if not, here."""
        if job.source is not None:
            return job
        path = self.layout.source(job)
        if not path.is_file():
            raise EncodeFailed("source_missing", f"the source file {job.source_file} is gone")
        try:
            source = await probe.probe(self.config.encode.handbrake, path)
        except probe.NotAVideo as e:  # the intake left the probe to the encode: a rejection
            raise EncodeFailed(NOT_VIDEO, str(e), reject=True) from None
        except probe.HandBrakeMissing as e:
            raise EncodeFailed("spawn_failed", str(e)) from None
        return dataclasses.replace(job, source=source)

    async def _dispatch(self, job: Job) -> Attempt:
        profile = self.config.encode.profiles.get(job.profile)
        if profile is None:
            raise EncodeFailed("unknown_profile", f"there is no profile named {job.profile!r}")
        if not self.layout.source(job).is_file():
            raise EncodeFailed("source_missing", f"the source file {job.source_file} is gone")
        attempt, token = await self.attempts.new(job.id)
        message = Dispatch(
            attempt=attempt.id,
            token=token,
            front=self.config.workers.public_url.rstrip("/"),
            args=tuple(profile.handbrake_args()),
        )
        try:
            await self.dispatcher.send(message)
        except DispatchFailed as e:
            await self.attempts.end(attempt.id, State.FAILED)
            self.broker.heard(str(e))
            raise
        log.info("job %s: dispatched as attempt %s (#%d)", job.id, attempt.id, attempt.number)
        return attempt

    async def _wait_for(
        self,
        job: Job,
        attempt: Attempt,
        on_progress: Callable[[Progress], None],
        *,
        probed: bool = False,
    ) -> EncodeResult | None:
        """Wait for the attempt's outcome: its result, or None when its lease lapsed."""
        loop = asyncio.get_running_loop()
        w = _Waiting(attempt, job, loop.create_future(), on_progress, worker=attempt.worker)
        w.probed = probed
        if attempt.state is State.CLAIMED:  # adopted: its lease runs from its last beat
            age = (now() - attempt.last_seen()).total_seconds()
            w.last_beat = time.monotonic() - max(0.0, age)
            w.beat_written = w.last_beat
        self.waiting[attempt.id] = w
        try:
            return await self._watch(w)
        except asyncio.CancelledError:
            await asyncio.shield(self._stopped(w))
            raise
        finally:
            self.waiting.pop(attempt.id, None)

    async def _watch(self, w: _Waiting) -> EncodeResult | None:
        waited = 0.0
        while True:
            if w.last_beat is None:
                timeout: float | None = self.lease_s  # not claimed yet: no lease runs
                if waited < UNCLAIMED_WARN_S <= waited + self.lease_s:
                    # Waiting for a free worker is normal; this long, it is worth a word.
                    log.warning(
                        "job %s: attempt %s not claimed after %.0f s: are workers running, "
                        "and can they reach %s (workers.public_url)?",
                        w.job.id, w.attempt.id, waited, self.config.workers.public_url,
                    )  # fmt: skip
                waited += self.lease_s
            else:
                timeout = w.last_beat + self.lease_s - time.monotonic()
                if timeout <= 0:
                    if await self.attempts.end(w.attempt.id, State.LOST, was=(State.CLAIMED,)):
                        return None
                    # It ended just now: done or failed, its outcome follows; any other
                    # end leaves nothing to wait for.
                    ended = await self.attempts.get(w.attempt.id)
                    if ended is None or ended.state not in (State.DONE, State.FAILED):
                        return None
                    timeout = RECORD_WAIT_S
            try:
                return await timeouts.wait_for(asyncio.shield(w.outcome), timeout)
            except TimeoutError:
                continue

    async def _stopped(self, w: _Waiting) -> None:
        """run() was cancelled: a user's cancel or delete ends the attempt (and revokes
        it); a shutdown leaves a claimed one to its worker."""
        job_id, attempt_id = w.job.id, w.attempt.id
        try:
            if job_id in self._detached:
                self._detached.discard(job_id)
                if w.last_beat is not None:
                    # Its last heartbeat, to the moment: the next start's adoption counts
                    # the lease from it (the store has it only to lease_s/4).
                    heard = now() - timedelta(seconds=time.monotonic() - w.last_beat)
                    await self.attempts.heartbeat(attempt_id, heard)
                    self._kept.add(job_id)
                    log.info("job %s: left to worker %s (adopted at the next start)",
                             job_id, w.worker)  # fmt: skip
                    return
                await self.attempts.end(attempt_id, State.SUPERSEDED)
                return
            await self.attempts.end(attempt_id, State.CANCELLED)
        except Exception as e:  # the store is closing; the next start supersedes it
            log.warning("job %s: attempt %s not ended: %s", job_id, attempt_id, e)
        self._later(self.dispatcher.revoke(attempt_id))

    def _later(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- the worker's side (web/workers.py) -----------------------------------------

    async def _authorised(self, attempt_id: str, token: str) -> Attempt:
        attempt = await self.attempts.get(attempt_id)
        if attempt is None or not attempt.token_matches(token):
            raise Unauthorized()
        return attempt

    async def _live_job(self, attempt: Attempt) -> Job:
        """The attempt's job, running; else the attempt ends and NotLive says why."""
        job = await self.store.get(attempt.job_id)
        if job is None or job.status is not Status.RUNNING:
            await self.attempts.end(attempt.id, State.CANCELLED)
            raise NotLive("cancelled")
        return job

    async def claim(self, attempt_id: str, token: str, worker: str) -> dict[str, Any]:
        """A worker takes the attempt, once: what it needs to encode it."""
        attempt = await self._authorised(attempt_id, token)
        if attempt.state is not State.DISPATCHED:
            raise NotLive(_why(attempt.state))
        job = await self._live_job(attempt)
        w = self.waiting.get(attempt.id)
        if w is not None:
            job = dataclasses.replace(job, source=w.job.source)  # probed here if not before
        profile = self.config.encode.profiles.get(job.profile)
        if profile is None:
            raise NotLive("superseded")
        claimed = await self.attempts.claim(attempt.id, worker)
        if claimed is None:
            again = await self.attempts.get(attempt.id)
            raise NotLive(_why(again.state if again else State.SUPERSEDED))
        if w is not None:
            w.attempt, w.worker = claimed, worker
            w.last_beat = w.beat_written = time.monotonic()
        self._seen[worker] = (job.id, time.monotonic())
        with contextlib.suppress(Exception):  # the worker's name is news, not the record
            await self.store.set_worker(job.id, worker)
        log.info("job %s: attempt %s claimed by %s", job.id, attempt.id, worker)
        source = job.source or MediaInfo()
        # The file's own size: the worker downloads exactly this many bytes.
        size = self._source_size(job)
        return {
            "job": job.id,
            "source": {**source.to_json(), "size": size, "ext": job.source_ext},
            "args": profile.handbrake_args(),
            "lease_s": self.lease_s,
            "progress_interval_s": PROGRESS_INTERVAL_S,
            "max_output_bytes": self.max_output_bytes,
        }

    @property
    def max_output_bytes(self) -> int:
        return self.config.web.max_upload_bytes

    def _source_size(self, job: Job) -> int:
        try:
            return self.layout.source(job).stat().st_size
        except OSError:
            return 0

    async def claimed(self, attempt_id: str, token: str) -> tuple[Attempt, Job]:
        """The claimed, live attempt and its job, for the source, log, output and fail
        routes. Unauthorized, or NotLive."""
        w = self.waiting.get(attempt_id)
        if w is not None and w.attempt.token_matches(token) and w.attempt.state is State.CLAIMED:
            if w.outcome.done():  # its output or failure is in already
                raise NotLive("superseded")
            return w.attempt, w.job
        attempt = await self._authorised(attempt_id, token)
        if attempt.state is not State.CLAIMED:
            raise NotLive(_why(attempt.state))
        return attempt, await self._live_job(attempt)

    def source_path(self, job: Job) -> Path:
        return self.layout.source(job)

    async def heartbeat(
        self, attempt_id: str, token: str, progress: float, fps: float | None, eta_s: float | None
    ) -> None:
        """Progress, and the lease's heartbeat. StopAttempt when the worker must stop."""
        w = self.waiting.get(attempt_id)
        if w is None or w.attempt.state is not State.CLAIMED:
            attempt = await self._authorised(attempt_id, token)
            if attempt.state is not State.CLAIMED:
                raise StopAttempt()
            # Claimed, but no run() waits on it (vidd just started): keep its lease.
            job = await self.store.get(attempt.job_id)
            if job is None or job.status is not Status.RUNNING:
                await self.attempts.end(attempt.id, State.CANCELLED)
                raise StopAttempt()
            if not await self.attempts.heartbeat(attempt.id):
                raise StopAttempt()
            if attempt.worker:
                self._seen[attempt.worker] = (job.id, time.monotonic())
            return
        if not w.attempt.token_matches(token):
            raise Unauthorized()
        if w.outcome.done():
            return  # its output is in; the record follows
        t = time.monotonic()
        w.last_beat = t
        if w.worker:
            self._seen[w.worker] = (w.job.id, t)
        if t - w.beat_written >= self.lease_s / 4:
            w.beat_written = t
            if not await self.attempts.heartbeat(attempt_id):
                raise StopAttempt()
        w.on_progress(Progress("encoding", progress, fps, eta_s))

    async def log_tail(self, attempt_id: str, token: str, tail: str) -> None:
        attempt, _ = await self.claimed(attempt_id, token)
        w = self.waiting.get(attempt.id)
        if w is not None:
            w.log_tail = tail[-MAX_LOG_TAIL:]

    async def release(self, attempt_id: str, token: str) -> None:
        """The worker is stopping (SIGTERM) and hands its attempt back: it ends as lost,
        and a fresh attempt is dispatched now rather than when the lease lapses."""
        attempt, job = await self.claimed(attempt_id, token)
        w = self.waiting.get(attempt.id)
        if w is None or not await self.attempts.end(attempt.id, State.LOST, was=(State.CLAIMED,)):
            raise NotLive("superseded")
        log.info("job %s: worker %s handed attempt %s back", job.id, w.worker, attempt.id)
        self._released.add(attempt.id)
        if not w.outcome.done():
            w.outcome.set_result(None)

    async def fail(self, attempt_id: str, token: str, code: str, message: str, tail: str) -> None:
        """The worker's encode failed: the job fails with its code and message."""
        attempt, job = await self.claimed(attempt_id, token)
        w = self.waiting.get(attempt.id)
        if w is None or not await self.attempts.end(attempt.id, State.FAILED, was=(State.CLAIMED,)):
            raise NotLive("superseded")
        log.info("job %s: worker %s failed it (%s)", job.id, w.worker, code)
        if not w.outcome.done():
            w.outcome.set_exception(EncodeFailed(code, message, tail or w.log_tail))

    def output_path(self, attempt: Attempt) -> Path:
        """Where a worker's output is received: the job's work folder in tmp/ (on the
        videos/ filesystem, so that accepting it is a rename)."""
        work = self.layout.work(attempt.job_id)
        work.mkdir(parents=True, exist_ok=True)
        return work / f"remote-{attempt.id}.mp4"

    async def accept_output(self, attempt: Attempt, path: Path) -> Job | None:
        """Verify a received output as a local encode's is, move it to videos/ and wait
        until the pool has recorded the job done (the job now; None if it was deleted).
        NotLive (the file removed) when the attempt went stale meanwhile; BadOutput (the
        job fails with that error) when the file is not a good video."""
        try:
            return await self._accept(attempt, path)
        finally:
            path.unlink(missing_ok=True)

    async def _accept(self, attempt: Attempt, path: Path) -> Job | None:
        w = self.waiting.get(attempt.id)
        if w is None or w.outcome.done():
            raise NotLive("superseded")
        job = w.job
        try:
            output = mp4.inspect(path).media
            if not output.video_codec:
                raise BadOutput("bad_output", "the worker's video has no video track")
            if job.source is not None:
                check_duration(output, job.source, w.log_tail)
        except (mp4.NotAnMp4, OSError, struct.error) as e:
            await self._fail_output(
                w, BadOutput("bad_output", f"the worker's file is not an MP4: {e}")
            )
        except EncodeFailed as e:  # BadOutput, or the duration check's
            await self._fail_output(w, e)
        if not await self.attempts.end(attempt.id, State.DONE, was=(State.CLAIMED,)):
            raise NotLive("superseded")
        self.layout.videos.mkdir(parents=True, exist_ok=True)
        os.replace(path, self.layout.video(job.id))
        recorded: asyncio.Future[Job | None] = asyncio.get_running_loop().create_future()
        self._recorded[job.id] = recorded
        try:
            w.outcome.set_result(
                EncodeResult(
                    output=output,
                    log_tail=w.log_tail,
                    source=job.source if w.probed else None,
                )
            )
            log.info("job %s: output of worker %s verified (%d bytes)", job.id, w.worker,
                     output.size)  # fmt: skip
            return await timeouts.wait_for(asyncio.shield(recorded), RECORD_WAIT_S)
        finally:
            self._recorded.pop(job.id, None)

    async def _fail_output(self, w: _Waiting, e: EncodeFailed) -> NoReturn:
        """A bad output fails the job, as a local encode's would. Raises BadOutput."""
        if not await self.attempts.end(w.attempt.id, State.FAILED, was=(State.CLAIMED,)):
            raise NotLive("superseded")
        if not w.outcome.done():
            w.outcome.set_exception(EncodeFailed(e.code, e.message, w.log_tail))
        raise BadOutput(e.code, e.message)

    # --- a store listener: the pool's record of a job answers the output's PUT --------

    def job_changed(self, job: Job, *, progress_only: bool) -> None:
        waiter = self._recorded.get(job.id)
        if waiter is not None and not progress_only and job.status is not Status.RUNNING:
            if not waiter.done():
                waiter.set_result(job)

    def job_deleted(self, job_id: str) -> None:
        waiter = self._recorded.get(job_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- GET /api/workers ------------------------------------------------------------

    async def workers(self) -> list[WorkerSeen]:
        """Workers heard from within the last hour, most recent first."""
        since = now() - timedelta(seconds=SEEN_WINDOW_S)
        t, wall = time.monotonic(), now()
        seen: dict[str, WorkerSeen] = {}
        for name, job, at in await self.attempts.workers_seen(since):
            seen[name] = WorkerSeen(name, job, max(0.0, (wall - at).total_seconds()))
        for name, (_, mono) in self._seen.items():
            age = t - mono
            if age > SEEN_WINDOW_S:
                continue
            before = seen.get(name)
            if before is None:
                seen[name] = WorkerSeen(name, None, age)
            elif age < before.last_seen_s:
                seen[name] = WorkerSeen(name, before.job, age)
        return sorted(seen.values(), key=lambda s: s.last_seen_s)


def _why(state: State) -> str:
    """The 409 code for an attempt that is not live (or claimed already)."""
    if state is State.CLAIMED:
        return "claimed"
    if state is State.CANCELLED:
        return "cancelled"
    return "superseded"


__all__ = [
    "LIVE",
    "BadOutput",
    "DispatchFailed",
    "NotLive",
    "RemoteEncoder",
    "StopAttempt",
    "Unauthorized",
    "WorkerSeen",
]
