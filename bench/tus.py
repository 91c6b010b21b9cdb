"""The case `tus`: a 2 GiB file through the resumable upload (tus) in one PATCH and in
50 MiB PATCHes, against `cp` of the same file on the same disk in the same run; and
vidd's RSS growth during each, against the multipart path's (curl -F) in the same vidd.

The sender is vidd's own tus client (vidd/tus_client.py, stdlib http.client) in a
thread. A random file is not a video: the last PATCH hands it to the intake, which
probes and rejects it; the time to that answer is the figure, as in the case `upload`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

from vidd.client import Client
from vidd.tus_client import CHUNK_SIZE, TusSender

from .harness import Context, GiB, Result, RssSampler, Vidd, rss_bytes
from .upload import (
    CURL_TIMEOUT_S,
    MB,
    SIZE,
    _timed,
    big_upload_vidd,
    cp_seconds,
    curl_multipart,
    make_random,
    short_of_space,
)


async def _tus_send(vidd: Vidd, path: Path, chunk_size: int) -> tuple[float, int, int, str]:
    """(seconds, RSS before, RSS peak, job status) of one tus upload of `path`."""
    loop = asyncio.get_running_loop()
    sender = TusSender(Client(vidd.url), chunk_size=chunk_size, timeout=CURL_TIMEOUT_S)
    before = rss_bytes(vidd.pid)
    with RssSampler(vidd.pid) as rss:
        t0 = loop.time()
        job = await asyncio.to_thread(sender.send, path)
        elapsed = loop.time() - t0
    return elapsed, before, rss.peak, str(job.get("status"))


async def case_tus(ctx: Context) -> list[Result]:
    folder = ctx.workdir / "tus"
    folder.mkdir(parents=True, exist_ok=True)
    if msg := short_of_space(folder):
        return [Result("tus", "2 GiB tus upload", msg, target="ratio <= 2.0")]
    curl = shutil.which("curl")
    big = folder / "big.bin"
    make_random(big, SIZE)
    runs: dict[str, tuple[float, int, int, str]] = {}
    multipart: tuple[int, int] | None = None
    try:
        cp_s = await cp_seconds(big)
        with big_upload_vidd(folder) as vidd:
            await asyncio.sleep(1.0)
            if curl is not None:  # the reference for memory: the multipart path
                before = rss_bytes(vidd.pid)
                with RssSampler(vidd.pid) as rss:
                    await _timed(curl_multipart(curl, big, vidd.url), CURL_TIMEOUT_S)
                multipart = (before, rss.peak)
                os.sync()
            for label, chunk in (("one PATCH", SIZE), ("50 MiB PATCHes", CHUNK_SIZE)):
                runs[label] = await _tus_send(vidd, big, chunk)
                os.sync()
    finally:
        big.unlink(missing_ok=True)

    results = []
    for label, (seconds, before, peak, status) in runs.items():
        ratio = seconds / cp_s
        results.append(
            Result(
                case="tus",
                figure=f"{SIZE / GiB:.0f} GiB tus upload in {label}, time to the job",
                measured=f"{seconds:.2f} s ({SIZE / seconds / MB:.0f} MB/s), job {status}",
                reference=f"cp {cp_s:.2f} s ({SIZE / cp_s / MB:.0f} MB/s)",
                ratio=ratio,
                target="ratio <= 2.0",
                met=ratio <= 2.0 and status == "rejected",
                note="rejected expected: random bytes are not a video; includes the probe",
                data={"upload_s": seconds, "cp_s": cp_s, "bytes": SIZE, "status": status},
            )
        )
        growth = (peak - before) / MB
        ref_growth = (multipart[1] - multipart[0]) / MB if multipart else None
        results.append(
            Result(
                case="tus",
                figure=f"vidd RSS growth during the tus upload in {label}",
                measured=f"{growth:.1f} MB (peak {peak / MB:.1f} MB)",
                reference=(
                    f"multipart {ref_growth:.1f} MB" if ref_growth is not None else "no curl"
                ),
                target="<= multipart + 5 MB",
                met=None if ref_growth is None else growth <= ref_growth + 5,
                data={"rss_before": before, "rss_peak": peak, "multipart_growth_mb": ref_growth},
            )
        )
    return results
