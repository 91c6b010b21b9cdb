"""The pool: real encodes through the store, the oldest job first in CPU priority,
failures recorded as data, cancel and shutdown that always reap and requeue."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from vidd.child import Child
from vidd.config import Config
from vidd.encoder import Encoder
from vidd.intake import Intake
from vidd.job import Job, Status
from vidd.layout import Layout
from vidd.pool import Pool
from vidd.store import Store

FAKE = Path(__file__).parent / "fake_handbrake.py"


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[float, str, Status, bool, float]] = []

    def job_changed(self, job: Job, *, progress_only: bool) -> None:
        loop = asyncio.get_running_loop()
        self.events.append((loop.time(), job.id, job.status, progress_only, job.progress))

    def job_deleted(self, job_id: str) -> None:
        pass


class Rig:
    def __init__(self, cfg: Config, store: Store, pool: Pool, intake: Intake, rec: Recorder):
        self.cfg, self.store, self.pool, self.intake, self.rec = cfg, store, pool, intake, rec

    async def add(self, clip: Path, name: str | None = None) -> Job:
        path = self.cfg.storage.tmp_dir / f"incoming-{os.urandom(4).hex()}{clip.suffix}"
        path.write_bytes(clip.read_bytes())
        return await self.intake.admit(path, "upload", name=name or clip.name)

    async def wait_status(self, job_id: str, *statuses: Status, timeout: float = 60) -> Job:
        async def poll() -> Job:
            while True:
                job = await self.store.get(job_id)
                if job is not None and job.status in statuses:
                    return job
                await asyncio.sleep(0.05)

        return await asyncio.wait_for(poll(), timeout)


@pytest.fixture
async def rig_factory(make_config: Callable[..., Config]) -> AsyncIterator[Callable[..., Any]]:
    """Rigs of a real store, intake, encoder and pool; stopped and closed after the test."""
    rigs: list[tuple[Pool, Store]] = []

    async def make(storage: dict[str, Any] | None = None, **encode: Any) -> Rig:
        encode = {"child_env": ["FAKE_HB_MODE"], **encode}  # the fake reads its mode from it
        cfg = make_config(watch={"enabled": False}, encode=encode, storage=storage or {})
        layout = Layout(cfg.storage)
        layout.make_dirs()
        store = Store(cfg.storage.db_path)
        await store.open()
        pool = Pool(cfg, store, Encoder(cfg, layout), layout)
        rec = Recorder()
        store.subscribe(pool)
        store.subscribe(rec)
        pool.start()
        rigs.append((pool, store))
        return Rig(cfg, store, pool, Intake(cfg, store, layout), rec)

    yield make
    for pool, store in rigs:
        await pool.stop(1)  # stopping twice is harmless; some tests stop theirs to look
        await store.close()


@pytest.fixture
async def rig(rig_factory: Callable[..., Any]) -> Rig:
    return await rig_factory()


@pytest.fixture
def fake_handbrake() -> str:
    FAKE.chmod(FAKE.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(FAKE)


async def test_a_queued_job_wakes_the_pool_and_converts(rig: Rig, clip: Path) -> None:
    await asyncio.sleep(0.2)  # the pool is idle, waiting on its event, not polling
    job = await rig.add(clip)
    done = await rig.wait_status(job.id, Status.DONE, Status.FAILED)
    assert done.status is Status.DONE, done.error
    assert done.output is not None and done.output.video_codec == "h264"
    assert (rig.cfg.storage.videos_dir / f"{job.id}.mp4").stat().st_size == done.output.size
    assert "Encode done" in (await rig.store.get(job.id)).log_tail  # type: ignore[union-attr]
    assert rig.pool.jobs_complete == 1 and rig.pool.busy == 0
    statuses = [s for _, i, s, p, _ in rig.rec.events if i == job.id and not p]
    assert statuses[:4] == [Status.ADMITTING, Status.QUEUED, Status.RUNNING, Status.DONE]
    assert statuses[4:] in ([], [Status.DONE])  # the poster, a moment after done
    # progress updates reach the store at most 4 times a second
    times = [t for t, i, _, p, _ in rig.rec.events if i == job.id and p]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(g >= 0.2 for g in gaps), gaps
    assert (rig.cfg.storage.sources_dir / job.source_file).exists()  # sources are kept


async def test_sources_go_only_after_a_verified_output(
    rig_factory: Callable[..., Any], clip: Path
) -> None:
    r = await rig_factory(storage={"keep_sources": False})
    job = await r.add(clip)
    done = await r.wait_status(job.id, Status.DONE, Status.FAILED)
    assert done.status is Status.DONE
    assert not (r.cfg.storage.sources_dir / job.source_file).exists()
    assert (r.cfg.storage.videos_dir / f"{job.id}.mp4").exists()


def nice_of(proc: Child) -> int:
    return os.getpriority(os.PRIO_PROCESS, proc.pid)


def rank_of(proc: Child) -> tuple[int, bool]:
    """A running encode's nice value, and whether all its threads run in the background."""
    tasks = os.listdir(f"/proc/{proc.pid}/task")
    idle = {os.sched_getscheduler(int(t)) == os.SCHED_IDLE for t in tasks}
    assert len(idle) == 1, "some threads in the background, some not"
    return nice_of(proc), idle.pop()


async def test_later_jobs_run_at_lower_priority_and_move_up(
    rig_factory: Callable[..., Any],
    fake_handbrake: str,
    clip: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_HB_MODE", "stall")  # encodes that run until cancelled
    r = await rig_factory(
        handbrake=fake_handbrake, max_parallel=3, nice_step=7, stall_timeout_s=60.0
    )
    try:
        jobs = [await r.add(clip) for _ in range(4)]
        for job in jobs[:3]:
            await r.wait_status(job.id, Status.RUNNING)
        await asyncio.sleep(0.3)
        # The first at nice 5; the ones behind it in the background (and at higher nice
        # values, which rank them only where vidd can't use the background).
        assert [rank_of(r.pool.encoder.running[j.id]) for j in jobs[:3]] == [
            (5, False),
            (12, True),
            (19, True),
        ]
        fourth = await r.store.get(jobs[3].id)
        assert fourth is not None and fourth.status is Status.QUEUED
        assert fourth.queue_position == 0

        assert await r.pool.cancel(jobs[0].id)
        await r.wait_status(jobs[3].id, Status.RUNNING)  # the free slot is filled at once
        await asyncio.sleep(0.3)
        # The second moved up, out of the background; the new one went in behind.
        assert [rank_of(r.pool.encoder.running[j.id]) for j in jobs[1:]] == [
            (5, False),
            (12, True),
            (19, True),
        ]
        cancelled = await r.store.get(jobs[0].id)
        assert cancelled is not None and cancelled.status is Status.CANCELLED
    finally:
        await r.pool.stop(0.1)
        await r.store.close()
    # stop() put the interrupted ones back in the queue, and reaped them
    async with Store(r.cfg.storage.db_path) as store:
        counts = await store.counts()
    assert counts["queued"] == 3 and counts["running"] == 0
    assert r.pool.encoder.running == {}
    assert list(r.cfg.storage.tmp_dir.iterdir()) == []


async def test_a_failure_is_recorded_with_its_log(
    rig_factory: Callable[..., Any],
    fake_handbrake: str,
    clip: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_HB_MODE", "exitcode:3")
    r = await rig_factory(handbrake=fake_handbrake)
    job = await r.add(clip)
    failed = await r.wait_status(job.id, Status.FAILED, Status.DONE)
    assert failed.status is Status.FAILED
    assert failed.error is not None and failed.error.code == "exit_code"
    assert failed.log_tail
    assert r.pool.jobs_failed == 1
    # the pool carries on: a retry is queued and runs again
    monkeypatch.setenv("FAKE_HB_MODE", "ok")
    await r.store.transition(job.id, Status.QUEUED)
    done = await r.wait_status(job.id, Status.DONE, Status.FAILED)
    assert done.status is Status.DONE and done.error is None


async def test_a_stalled_encode_fails_as_stalled(
    rig_factory: Callable[..., Any],
    fake_handbrake: str,
    clip: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_HB_MODE", "stall")
    r = await rig_factory(handbrake=fake_handbrake, stall_timeout_s=1.0, kill_grace_s=0.5)
    job = await r.add(clip)
    failed = await r.wait_status(job.id, Status.FAILED, timeout=30)
    assert failed.error is not None and failed.error.code == "stalled"
    assert r.pool.encoder.running == {}


async def test_a_cancel_during_a_claim_waits_for_the_claimed_job(
    rig_factory: Callable[..., Any],
    fake_handbrake: str,
    clip: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_HB_MODE", "stall")
    r = await rig_factory(handbrake=fake_handbrake)
    claimed = asyncio.Event()
    real_claim = r.store.claim_next

    async def slow_claim() -> Job | None:
        job = await real_claim()
        if job is not None:
            claimed.set()
            await asyncio.sleep(0.5)  # running in the store, no task yet: the race window
        return job

    monkeypatch.setattr(r.store, "claim_next", slow_claim)
    job = await r.add(clip)
    await claimed.wait()
    assert (await r.store.get(job.id)).status is Status.RUNNING  # type: ignore[union-attr]
    assert await r.pool.cancel(job.id)  # found once the claim has registered it
    done = await r.store.get(job.id)
    assert done is not None and done.status is Status.CANCELLED
    assert r.pool.encoder.running == {}


async def test_the_pool_survives_a_failing_claim(
    rig: Rig, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_claim = rig.store.claim_next
    calls = 0

    async def flaky_claim() -> Job | None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("disk I/O error")
        return await real_claim()

    monkeypatch.setattr(rig.store, "claim_next", flaky_claim)
    monkeypatch.setattr(asyncio, "sleep", _fast_sleep(asyncio.sleep))
    job = await rig.add(clip)
    done = await rig.wait_status(job.id, Status.DONE, Status.FAILED)
    assert done.status is Status.DONE
    assert rig.pool.alive and calls >= 2


def _fast_sleep(real: Callable[[float], Any]) -> Callable[[float], Any]:
    async def sleep(seconds: float, *args: Any) -> Any:
        return await real(min(seconds, 0.05), *args)

    return sleep
