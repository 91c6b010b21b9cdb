"""The case `workers`: remote encodes through Celery and Redis, vidd's own overhead.

A vidd front in celery mode, Debian's redis-server with a password, and `vidd worker`
processes (plain processes on 127.0.0.1 here: the bench measures vidd, not a network),
whose HandBrakeCLI is tests/fake_handbrake.py in its sleep mode: it reports progress
while it sleeps SLEEP_S, then stream-copies the source into a valid MP4. An encoder that
costs no CPU, so that this machine's two cores do not cap the scale-out: the figures are
vidd's overhead (dispatch, claim, the source and the output over HTTP, verification,
poster), not HandBrake's. Real scale-out is CPU for CPU.

- dispatch: from the front's attempt rows (read-only), dispatched_at -> claimed_at of every
  attempt: the front's send_task through Redis to the worker's claim over HTTP.
- throughput: JOBS uploads (UPLOADS_AT_ONCE at a time) converted by 1 worker, then by 2
  (encode.max_parallel = the workers' slots); the span from the first dispatch to the last
  job done. Target: 2 workers at least TARGET times as fast as 1.
"""

from __future__ import annotations

import asyncio
import shutil
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from testkit.media import make_clip
from testkit.workers import Cluster

from .harness import Context, Result, ms, percentile

JOBS = 12
SLEEP_S = 2.0
TARGET = 1.9
WAIT_S = 120.0
UPLOADS_AT_ONCE = 4
FAKE_HANDBRAKE = Path(__file__).resolve().parent.parent / "tests" / "fake_handbrake.py"
# A profile whose arguments put the fake in its sleep mode on the worker (the message
# carries the profile's arguments; a worker's environment does not reach its encoder).
PROFILE = f"""
[encode.profiles.sleep]
args = ["--fake-sleep", "{SLEEP_S:g}"]
"""


async def case_workers(ctx: Context) -> list[Result]:
    return await asyncio.to_thread(measure, ctx)


def measure(ctx: Context) -> list[Result]:
    clip = ctx.workdir / "media" / "workers-clip.avi"
    if not clip.exists():
        clip.parent.mkdir(parents=True, exist_ok=True)
        make_clip(clip, seconds=2)  # small: the bytes over HTTP are not what is measured
    spans: dict[int, float] = {}
    dispatch: list[float] = []
    for workers in (1, 2):
        span, waits = run_jobs(ctx.workdir / f"workers-{workers}", clip, workers)
        spans[workers] = span
        dispatch += waits
    return [dispatch_result(dispatch), throughput_result(spans)]


def run_jobs(folder: Path, clip: Path, workers: int) -> tuple[float, list[float]]:
    """JOBS uploads converted by `workers` workers: (the span from the first dispatch to
    the last done, seconds; every attempt's dispatched -> claimed, seconds)."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = []
    for i in range(JOBS):
        sources.append(folder / f"job-{i:02d}.avi")
        shutil.copyfile(clip, sources[-1])
    with Cluster(
        folder,
        workers=workers,
        lease_s=30.0,
        isolated=False,
        handbrake=str(FAKE_HANDBRAKE),
        front_sections={"encode": {"default_profile": "sleep"}},
        front_text=PROFILE,
    ) as cluster:
        cluster.wait_workers_ready()
        # All twelve at once, as a batch arrives: the queue is full from the start.
        with ThreadPoolExecutor(UPLOADS_AT_ONCE) as pool:
            ids = [job["id"] for job in pool.map(cluster.upload, sources)]
        jobs = [cluster.wait_job(job_id, "done", timeout=WAIT_S) for job_id in ids]
        attempts = cluster.attempts()
    if len(attempts) != JOBS or any(a["state"] != "done" for a in attempts):
        raise RuntimeError(f"expected {JOBS} attempts, each done: {attempts}")
    first = min(_time(a["dispatched_at"]) for a in attempts)
    last = max(_time(j["finished_at"]) for j in jobs)
    waits = [_time(a["claimed_at"]) - _time(a["dispatched_at"]) for a in attempts]
    return last - first, waits


def _time(value: Any) -> float:
    return datetime.fromisoformat(str(value)).timestamp()


def dispatch_result(waits: list[float]) -> Result:
    return Result(
        case="workers",
        figure=f"dispatch -> claimed (p50 / p99 of {len(waits)} attempts)",
        measured=f"{ms(percentile(waits, 50))} / {ms(percentile(waits, 99))}",
        note="the front's send_task through Redis to the worker's claim over HTTP, "
        "from the attempt rows, both runs; an idle worker waits on the queue; with "
        f"{len(waits)} samples p99 is about the slowest one",
        data={"dispatch_s": waits},
    )


def throughput_result(spans: dict[int, float]) -> Result:
    ratio = spans[1] / spans[2]
    return Result(
        case="workers",
        figure=f"{JOBS} jobs, 2 workers vs 1 (fake encoder sleeping {SLEEP_S:g} s)",
        measured=f"{spans[2]:.2f} s with 2 workers",
        reference=f"{spans[1]:.2f} s with 1 worker",
        ratio=ratio,
        target=f">= {TARGET:g}x",
        met=ratio >= TARGET,
        note=f"ratio: 1 worker's span / 2 workers'; ideal {JOBS * SLEEP_S:g} s and "
        f"{JOBS * SLEEP_S / 2:g} s; vidd's overhead per job with 1 worker "
        f"{(spans[1] - JOBS * SLEEP_S) / JOBS:.2f} s (dispatch, claim, the source and the "
        "output over HTTP, the fake's start and stream copy, verification); the fake "
        "encoder measures vidd's overhead, not HandBrake's: real scale-out is CPU for CPU",
        data={"span_s": spans},
    )
