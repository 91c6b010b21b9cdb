"""The encoder: runs HandBrakeCLI on one job, reports its progress, and verifies the result
before it moves the output to videos/. It owns every HandBrakeCLI argument of an encode.

Exit code 0 proves nothing, so success is: exit code 0, a final WorkDone with Error 0,
and an output that exists, is not empty, probes as a video and lasts as long as the
source. Any failure is an EncodeFailed carrying a code, plain words and HandBrake's log
tail; on every way out but success the job's files in tmp/ are removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import struct
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from . import children, disk, mp4, poster, probe, repackage
from .child import Child
from .config import Config, Profile
from .encode_scan import EncodeScan
from .job import Job, MediaInfo
from .layout import Layout
from .progress import BlockParser, Progress, ProgressMeter

log = logging.getLogger(__name__)

READ_CHUNK = 64 << 10
MAX_LINE = 4096  # a longer line is cut: it is log noise, never a progress line
DRAIN_S = 5.0  # how long the pipes may stay open after HandBrake exits
DURATION_TOLERANCE = 0.02
MIN_DURATION_TOLERANCE_S = 1.0

# HandBrake's exit codes and WorkDone errors (libhb/handbrake/common.h).
HB_ERRORS = {
    1: "the encode was cancelled",
    2: "HandBrake found no title to encode",
    3: "HandBrake could not set up the encode",
    4: "HandBrake failed for an unknown reason",
    5: "HandBrake could not read the source",
}


# A failed encode ran out of space when its log says so (strerror(ENOSPC)), or when it
# leaves the tmp/ disk all but full: HandBrake 1.6.1 says nothing when its muxer's writes
# fail, exits 0 with WorkDone Error 0, and leaves a cut-off file.
NO_SPACE = "no space left on device"
NOT_VIDEO = "not_video"  # the error code of a rejection, as the intake's (store.reject)
FULL_DISK_FREE_BYTES = 1 << 20


class EncodeFailed(Exception):
    """An encode that did not produce a verified video. A failure is data: the pool stores it."""

    def __init__(
        self, code: str, message: str, log_tail: str = "", *, reject: bool = False
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.log_tail = log_tail
        # Not a video after all (found by the encode's own scan, the intake having left
        # the probe to it): the job ends `rejected`, as the probe would have had it.
        self.reject = reject


@dataclass(frozen=True)
class EncodeResult:
    output: MediaInfo
    log_tail: str
    repackaged: bool = False  # a stream copy by ffmpeg (repackage.py), not an encode
    source: MediaInfo | None = None  # what the encode's scan found, for a job not probed


def output_rate(profile: Profile) -> float | None:
    """The frame rate a profile asks for (`-r 15`, `--rate=15`), or None when HandBrake
    keeps the source's or a preset decides."""
    args = profile.args
    for i, arg in enumerate(args):
        value = None
        if arg in ("-r", "--rate") and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith("--rate="):
            value = arg.split("=", 1)[1]
        if value is not None:
            with contextlib.suppress(ValueError):
                rate = float(value)
                if 0 < rate <= 1000:
                    return rate
    return None


def _line_buffered() -> list[str]:
    """`stdbuf -oL` in front of HandBrakeCLI: its stdout is fully buffered into a pipe, so
    without it the progress of an encode arrives at its end. Looked up once."""
    stdbuf = shutil.which("stdbuf")
    return [stdbuf, "-oL"] if stdbuf else []


_LINE_BUFFERED = _line_buffered()


async def _lines(stream: asyncio.StreamReader) -> AsyncIterator[str]:
    """Decoded lines of a pipe, each at most MAX_LINE characters."""
    buf = b""
    while chunk := await stream.read(READ_CHUNK):
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for raw in lines:
            yield raw[:MAX_LINE].decode("utf-8", "replace")
        if len(buf) > MAX_LINE:
            yield buf[:MAX_LINE].decode("utf-8", "replace")
            buf = b""
    if buf:
        yield buf[:MAX_LINE].decode("utf-8", "replace")


@dataclass
class Priority:
    """Where a job's encode stands: its nice value, and whether it runs in the background
    (behind another encode: only the CPU time the ones ahead leave; see
    children.set_priority). The pool changes it as jobs end; the encoder applies it."""

    nice: int = 0
    background: bool = False

    def __call__(self) -> tuple[int, bool]:
        return self.nice, self.background


@dataclass
class _Run:
    """What one running encode has seen so far."""

    proc: Child
    meter: ProgressMeter
    on_progress: Callable[[Progress], None]
    tail: deque[str]
    parser: BlockParser = field(default_factory=BlockParser)
    last_change: float = field(default_factory=time.monotonic)
    last_key: tuple[str, float] | None = None
    workdone_error: int | None = None
    started: float = field(default_factory=time.monotonic)
    scan: EncodeScan | None = None  # for a job the intake did not probe
    size: int = 0  # the source's, for the scan's facts
    rate: float | None = None  # the output frame rate, for the meter's frame count
    source: MediaInfo | None = None
    rejected: str | None = None  # why the scan found it is not a video
    priority: Priority = field(default_factory=Priority)  # as the pool asks it
    on_source: Callable[[MediaInfo], None] | None = None  # told what the scan found
    # In the background now: it may be starved of CPU on purpose, so its stall clock
    # stands still until it moves up.
    background: bool = False

    def on_stderr(self, line: str) -> None:
        self.tail.append(line)
        if self.scan is not None and self.scan.feed(line):
            self.scanned(stop=True)

    def scanned(self, *, stop: bool) -> None:
        """The scan's facts are in: judge them as the probe would. Not a video: stop
        HandBrake now (`stop`), rather than let it encode a text file."""
        if self.scan is None or self.source is not None or self.rejected is not None:
            return
        try:
            self.source = probe.media_info(self.scan.title_set(), self.size)
        except probe.NotAVideo as e:
            self.rejected = str(e) or "not a video"
            if stop:
                children.kill_now(self.proc)
            return
        if self.on_source is not None:
            self.on_source(self.source)
        if self.rate:
            self.meter.frames_total = self.source.duration * self.rate

    def log_tail(self) -> str:
        return "\n".join(self.tail)

    def on_block(self, name: str, block: dict[str, Any]) -> None:
        if name != "Progress":
            return
        if block.get("State") == "WORKDONE":
            work_done = block.get("WorkDone")
            error = work_done.get("Error") if isinstance(work_done, dict) else None
            self.workdone_error = error if isinstance(error, int) else -1
            self.last_change = time.monotonic()
            return
        now = time.monotonic()
        p = self.meter.update(block, now)
        if p is None:
            return
        # A stall is no change: HandBrake repeats the same block while it is stuck.
        key = (p.phase, round(p.progress, 4))
        if key != self.last_key:
            self.last_key = key
            self.last_change = now
        self.on_progress(p)


class JobEncoder(Protocol):
    """What the pool runs jobs with: this module's Encoder, or remote.RemoteEncoder."""

    outlives_vidd: bool
    runs_here: bool  # its encodes take this machine's CPU

    async def run(
        self,
        job: Job,
        on_progress: Callable[[Progress], None],
        *,
        priority: Priority | None = None,
        on_source: Callable[[MediaInfo], None] | None = None,
    ) -> EncodeResult: ...

    async def make_poster(self, job_id: str, duration: float, *, nice: int = 0) -> bool: ...

    async def unavailable(self) -> str | None: ...

    def renice(self, job_id: str, priority: Priority) -> bool: ...

    def kill_all(self) -> None: ...

    def detach(self, job_id: str) -> None: ...

    def kept(self, job_id: str) -> bool: ...


class Encoder:
    """Runs encodes; `running` maps a job id to its HandBrakeCLI process."""

    def __init__(self, config: Config, layout: Layout) -> None:
        self.config = config
        self.layout = layout
        self._runs: dict[str, _Run] = {}  # job id -> what its running encode has seen
        self._said_nice_only = False
        self._killed: set[str] = set()  # by kill_all: reported as such, not as a crash

    def __repr__(self) -> str:
        return f"<Encoder running={len(self._runs)}>"

    @property
    def running(self) -> dict[str, Child]:
        """Each running encode's HandBrakeCLI process, by job id."""
        return {job_id: run.proc for job_id, run in self._runs.items()}

    def command(self, job: Job) -> list[str]:
        """The HandBrakeCLI argument list for a job. File names are vidd's own, never a user's."""
        profile = self.config.encode.profiles[job.profile]
        return [
            self.config.encode.handbrake,
            "--json",
            "-i",
            str(self.layout.source(job).resolve()),
            "-o",
            str(self.layout.tmp_video(job.id).resolve()),
            "--format",
            "av_mp4",
            *profile.handbrake_args(),
        ]

    # What the pool asks of every encoder (JobEncoder); the remote one answers otherwise.
    outlives_vidd = False  # a local encode ends with vidd; a remote worker's goes on
    runs_here = True

    async def unavailable(self) -> str | None:
        """Why no encode can start now, or None: a local one always can."""
        return None

    def detach(self, job_id: str) -> None:
        """vidd is stopping: nothing of a local encode goes on without it."""

    def kept(self, job_id: str) -> bool:
        """Whether a detached job's encode goes on: never for a local one."""
        return False

    def renice(self, job_id: str, priority: Priority) -> bool:
        """Give a running encode this priority. False if it is not running (yet): an
        encode still starting takes its priority's latest values once it runs."""
        run = self._runs.get(job_id)
        if run is None or run.proc.returncode is not None:
            return False
        run.priority = priority
        return self._apply(run)

    def _apply(self, run: _Run) -> bool:
        background = self._may_background(run.priority.background)
        if run.background and not background:
            run.last_change = time.monotonic()  # its stall clock starts now
        run.background = background
        return children.set_priority(run.proc, run.priority.nice, background=background)

    def _may_background(self, asked: bool) -> bool:
        """Into the background only if it can be moved out again when it comes first;
        else the nice value alone ranks it (said once in the log)."""
        if not asked:
            return False
        if children.can_move_up():
            return True
        if not self._said_nice_only:
            self._said_nice_only = True
            log.info(
                "encoder: the encodes behind the first are ranked by nice value only: vidd "
                "may not move an encode up again (it needs CAP_SYS_NICE or a nice limit, "
                "as the unit's LimitNICE=+0)"
            )
        return False

    def kill_all(self) -> None:
        """A forced exit: SIGKILL every running encode's group now, without waiting."""
        for job_id, proc in list(self.running.items()):
            self._killed.add(job_id)
            children.kill_now(proc)

    async def run(
        self,
        job: Job,
        on_progress: Callable[[Progress], None],
        *,
        priority: Priority | None = None,
        on_source: Callable[[MediaInfo], None] | None = None,
    ) -> EncodeResult:
        """Encode a job into videos/<id>.mp4. Raises EncodeFailed. The poster is not made
        here: the job is done without it, and make_poster adds it a moment later."""
        self.layout.clear_tmp_of(job.id)  # leftovers of an attempt vidd did not see through
        priority = priority or Priority()
        try:
            repackaged = await self._repackage(job, priority.nice)
            scanned = None
            if repackaged is not None:
                output, log_tail = repackaged
            else:
                output, log_tail, scanned = await self._encode(
                    job, on_progress, priority, on_source
                )
        finally:
            self.layout.clear_tmp_of(job.id)  # the work folder, HandBrake's leftovers in it
        return EncodeResult(
            output=output, log_tail=log_tail, repackaged=repackaged is not None, source=scanned
        )

    async def make_poster(self, job_id: str, duration: float, *, nice: int = 0) -> bool:
        """The poster of a done job's video, into videos/<id>.jpg. False if it could not be
        made (logged): a missing poster never fails a job. Cancelled, it leaves no file."""
        video, image = self.layout.outputs(job_id)
        work = self.layout.work(job_id)
        work.mkdir(parents=True, exist_ok=True)
        try:
            return await poster.make(
                self.config.encode.ffmpeg,
                video,
                self.layout.tmp_poster(job_id),
                image,
                duration,
                nice=nice,
                box=children.Box(home=work, reads=(video,), pass_env=self.config.encode.child_env),
            )
        finally:
            self.layout.clear_tmp_of(job_id)

    async def _repackage(self, job: Job, nice: int) -> tuple[MediaInfo, str] | None:
        """For a profile with `repackage`: stream-copy a source that is H.264/AAC already
        into videos/ (output, log tail). None when the job must be encoded instead; the
        log says which way it went and why."""
        cfg = self.config.encode
        profile = cfg.profiles.get(job.profile)
        if profile is None or not profile.repackage:
            return None
        why = repackage.why_not(job.source, job.source_ext)
        if why is None and not cfg.ffmpeg:
            why = "there is no ffmpeg (encode.ffmpeg)"
        if why is not None:
            log.info("job %s: encoding, not repackaging: %s", job.id, why)
            return None
        assert job.source is not None
        source_path = self.layout.source(job)
        tmp_out = self.layout.tmp_video(job.id)
        work = self.layout.work(job.id)
        work.mkdir(parents=True, exist_ok=True)
        self.layout.videos.mkdir(parents=True, exist_ok=True)
        box = children.Box(home=work, reads=(source_path.resolve(),), pass_env=cfg.child_env)
        started = time.monotonic()
        try:
            output, words = await repackage.run(
                cfg.ffmpeg,
                source_path.resolve(),
                tmp_out.resolve(),
                job.source.duration,
                nice=nice,
                box=box,
            )
            check_duration(output, job.source, words)
        except (repackage.Failed, EncodeFailed) as e:
            log.warning("job %s: repackaging failed (%s); encoding instead", job.id, e)
            tmp_out.unlink(missing_ok=True)
            return None
        os.replace(tmp_out, self.layout.video(job.id))
        log.info(
            "job %s: repackaged with ffmpeg (stream copy, index first) in %.1f s",
            job.id, time.monotonic() - started,
        )  # fmt: skip
        tail = "\n".join(["vidd: repackaged with ffmpeg -c copy -movflags +faststart", words])
        return output, tail.strip()

    async def _encode(
        self,
        job: Job,
        on_progress: Callable[[Progress], None],
        priority: Priority,
        on_source: Callable[[MediaInfo], None] | None,
    ) -> tuple[MediaInfo, str, MediaInfo | None]:
        """Run HandBrake, verify its output and move it to videos/: (output, log tail,
        the source's facts when this encode's scan found them)."""
        cfg = self.config.encode
        source_path = self.layout.source(job)
        if not source_path.is_file():
            raise EncodeFailed("source_missing", f"the source file {job.source_file} is gone")
        source = job.source
        size = source_path.stat().st_size
        if source is None and size == 0:  # as the probe says it
            raise EncodeFailed(NOT_VIDEO, "the file is empty", reject=True)
        profile = cfg.profiles.get(job.profile)
        if profile is None:
            raise EncodeFailed("unknown_profile", f"there is no profile named {job.profile!r}")
        work = self.layout.work(job.id)
        self.layout.videos.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        args = [*_LINE_BUFFERED, *self.command(job)]
        if shutil.which(cfg.handbrake) is None:
            raise EncodeFailed("spawn_failed", f"HandBrakeCLI ({cfg.handbrake}) is not there")
        # The box: HandBrake reads its source and writes only in the job's work folder
        # (its TMPDIR too, so the hb.<pid> a killed HandBrake leaves is cleaned up).
        # (The tool itself too: stdbuf stands first in the command.)
        box = children.Box(
            home=work,
            reads=(source_path.resolve(), Path(cfg.handbrake)),
            pass_env=cfg.child_env,
        )
        asked = priority()
        background = self._may_background(priority.background)
        try:
            proc = await children.spawn(args, nice=priority.nice, background=background, box=box)
        except OSError as e:
            raise EncodeFailed("spawn_failed", f"HandBrakeCLI could not start: {e}") from None
        rate = output_rate(profile)
        run = _Run(
            proc=proc,
            meter=ProgressMeter(source.duration * rate if rate and source else None),
            on_progress=on_progress,
            tail=deque(maxlen=max(1, self.config.encode.log_tail_lines)),
            # Not probed at intake: HandBrake's scan, as this encode starts, tells.
            scan=EncodeScan() if source is None else None,
            size=size,
            rate=rate,
            source=source,
            priority=priority,
            background=background,
            on_source=on_source,
        )
        log.info("job %s: encoding with %s (pid %d)", job.id, job.profile, proc.pid)
        self._runs[job.id] = run
        if priority() != asked:  # moved up (or back) while HandBrake started
            self._apply(run)
        try:
            code = await self._supervise(run)
        finally:
            self._runs.pop(job.id, None)
            if run.background:  # let it stop at normal speed, not on leftover CPU time
                children.set_priority(proc, run.priority.nice)
            killed = job.id in self._killed
            self._killed.discard(job.id)
            # SIGTERM, SIGKILL after the grace, reap; and kill any grandchild left in the
            # group. Shielded: a cancelled encode must still be reaped.
            await asyncio.shield(children.stop(proc, cfg.kill_grace_s))
        if killed:
            raise EncodeFailed("killed", "vidd was stopped by force mid-encode", run.log_tail())
        elapsed = time.monotonic() - run.started
        log.debug("job %s: HandBrake exited %d after %.3f s", job.id, code, elapsed)
        if source is None:
            source = await self._scanned_source(job, run, code)
        output = await self._verify(job, source, code, run)
        return output, run.log_tail(), None if job.source is not None else source

    async def _scanned_source(self, job: Job, run: _Run, code: int) -> MediaInfo:
        """The source's facts from the encode's scan, or EncodeFailed with `reject` when
        the scan says (as the probe would have) that it is not a video."""
        scan, tail = run.scan, run.log_tail()
        if run.source is None and run.rejected is None and scan is not None:
            if code in (126, 127):  # setpriv could not run it: vidd's trouble, not the file's
                raise EncodeFailed("spawn_failed", f"HandBrakeCLI could not start ({code})", tail)
            if not scan.seen:
                # None of the lines this reads (a HandBrake that logs otherwise, or one that
                # died before its scan): never reject a file for that; the probe decides,
                # as before issue 14, and the encode's own failure stands.
                log.warning("job %s: HandBrake's log said nothing of its scan; probing", job.id)
                return await self._probe_after(job, tail)
            if code != 0 and not scan.complete:
                # HandBrake could not get as far as a title: the probe's words for it.
                raise EncodeFailed(NOT_VIDEO, probe.unreadable(code, tail), tail, reject=True)
            run.scanned(stop=False)  # exited before its job dump: judge what was seen
        if run.rejected is not None:
            raise EncodeFailed(NOT_VIDEO, run.rejected, tail, reject=True)
        assert run.source is not None
        return run.source

    async def _probe_after(self, job: Job, tail: str) -> MediaInfo:
        cfg = self.config.encode
        source_path = self.layout.source(job).resolve()
        box = children.Box(
            home=self.layout.work(job.id), reads=(source_path,), pass_env=cfg.child_env
        )
        try:
            return await probe.probe(cfg.handbrake, source_path, box)
        except probe.NotAVideo as e:
            raise EncodeFailed(NOT_VIDEO, str(e), tail, reject=True) from None
        except probe.HandBrakeMissing as e:
            raise EncodeFailed("spawn_failed", str(e), tail) from None

    async def _supervise(self, run: _Run) -> int:
        """Read HandBrake's output until it exits; kill it if it stalls. Returns the exit code."""
        stall_s = self.config.encode.stall_timeout_s or float("inf")  # 0: never a stall
        proc = run.proc
        assert proc.stdout is not None and proc.stderr is not None
        readers = {
            asyncio.create_task(self._read_stdout(proc.stdout, run)),
            asyncio.create_task(self._read_stderr(proc.stderr, run)),
        }
        waiter = asyncio.create_task(proc.wait())
        try:
            watched: set[asyncio.Task[Any]] = {waiter, *readers}
            while not waiter.done():
                if run.background:  # starved on purpose, maybe: not a stall
                    run.last_change = time.monotonic()
                idle = time.monotonic() - run.last_change
                if idle >= stall_s:
                    await children.stop(proc, self.config.encode.kill_grace_s)
                    raise EncodeFailed(
                        "stalled",
                        f"HandBrake made no progress for {stall_s:g} s and was stopped",
                        run.log_tail(),
                    )
                done, _ = await asyncio.wait(
                    watched,
                    timeout=None if stall_s == float("inf") else stall_s - idle,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                for task in done - {waiter}:
                    task.result()  # a failing progress callback is a bug: let it out
                    watched.discard(task)
            # HandBrake is gone; let the readers take in what is left (the last WorkDone).
            # Anything still holding the pipes after DRAIN_S is killed with the group.
            pending = {t for t in readers if not t.done()}
            if pending:
                _, pending = await asyncio.wait(pending, timeout=DRAIN_S)
                if pending:
                    children.kill_now(proc)
                    await asyncio.wait(pending, timeout=1.0)
            for task in readers:
                if task.done():
                    task.result()
            return waiter.result()
        finally:
            for task in (*readers, waiter):
                task.cancel()
            await asyncio.gather(*readers, waiter, return_exceptions=True)

    async def _read_stdout(self, stream: asyncio.StreamReader, run: _Run) -> None:
        async for line in _lines(stream):
            block = run.parser.feed(line)
            if block is not None:
                run.on_block(*block)
            elif run.parser.outside and line.strip():
                run.tail.append(line)

    async def _read_stderr(self, stream: asyncio.StreamReader, run: _Run) -> None:
        async for line in _lines(stream):
            run.on_stderr(line)

    async def _verify(self, job: Job, source: MediaInfo, code: int, run: _Run) -> MediaInfo:
        """Check everything that makes an encode good, then move it into videos/."""
        try:
            return await self._verified(job, source, code, run)
        except EncodeFailed as e:
            if not self._out_of_space(e.log_tail):
                raise
            raise EncodeFailed(
                "disk_full",
                "the disk filled up during the conversion; free some space, then retry",
                e.log_tail,
            ) from None

    def _out_of_space(self, log_tail: str) -> bool:
        """Whether a failed encode ran out of disk space (checked before tmp/ is cleaned)."""
        if NO_SPACE in log_tail.lower():
            return True
        try:
            return disk.free_bytes(self.config.storage.tmp_dir) < FULL_DISK_FREE_BYTES
        except OSError:
            return False

    async def _verified(self, job: Job, source: MediaInfo, code: int, run: _Run) -> MediaInfo:
        tmp_out = self.layout.tmp_video(job.id)
        tail = run.log_tail()
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = str(-code)
            raise EncodeFailed("crashed", f"HandBrake was killed by signal {name}", tail)
        if code != 0:
            reason = HB_ERRORS.get(code, "HandBrake failed")
            raise EncodeFailed("exit_code", f"{reason} (exit code {code})", tail)
        if run.workdone_error is None:
            raise EncodeFailed(
                "no_workdone", "HandBrake exited without saying that the encode was done", tail
            )
        if run.workdone_error != 0:
            reason = HB_ERRORS.get(run.workdone_error, "HandBrake failed")
            raise EncodeFailed("workdone_error", f"{reason} (error {run.workdone_error})", tail)
        try:
            size = tmp_out.stat().st_size
        except FileNotFoundError:
            size = 0
        if size == 0:
            raise EncodeFailed("no_output", "HandBrake finished but wrote no video", tail)
        try:  # read from the file's own index: no second HandBrake scan per job
            output = mp4.inspect(tmp_out).media
        except (mp4.NotAnMp4, OSError, struct.error) as e:
            raise EncodeFailed(
                "bad_output", f"the converted file is not an MP4: {e}", tail
            ) from None
        if not output.video_codec:
            raise EncodeFailed("bad_output", "the converted file has no video track", tail)
        check_duration(output, source, tail)
        os.replace(tmp_out, self.layout.video(job.id))
        return output


def check_duration(output: MediaInfo, source: MediaInfo, tail: str) -> None:
    """A result lasts as long as its source, within a tolerance. Raises EncodeFailed."""
    allowed = max(DURATION_TOLERANCE * source.duration, MIN_DURATION_TOLERANCE_S)
    if abs(output.duration - source.duration) > allowed:
        raise EncodeFailed(
            "duration_mismatch",
            f"the converted video lasts {output.duration:.1f} s "
            f"but the source lasts {source.duration:.1f} s",
            tail,
        )
