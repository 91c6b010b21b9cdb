"""The case `upload`: a 2 GiB file POSTed as multipart by curl over loopback, against `cp`
of the same file on the same disk; and how much vidd's RSS grows meanwhile.

A random file is not a video: vidd streams it into tmp/, the intake probes it and
rejects it (422). The time to that answer is the figure.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

from .harness import Context, GiB, MiB, Result, RssSampler, Vidd, rss_bytes

SIZE = 2 * GiB
NEED_FREE = 6 * GiB
CHUNK = 16 * MiB
CURL_TIMEOUT_S = 150.0
MB = 1_000_000


def make_random(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        for _ in range(size // CHUNK):
            f.write(os.urandom(CHUNK))


async def _timed(args: list[str], timeout: float) -> tuple[float, bytes]:
    t0 = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    elapsed = time.monotonic() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{args[0]} exited with {proc.returncode}")
    return elapsed, out


def short_of_space(folder: Path) -> str | None:
    """Why the case is skipped when `folder`'s disk has less than NEED_FREE free."""
    free = shutil.disk_usage(folder).free
    if free < NEED_FREE:
        return f"skipped: {free / GiB:.1f} GiB free, needs {NEED_FREE / GiB:.0f} GiB"
    return None


async def cp_seconds(big: Path) -> float:
    """Seconds `cp` takes to copy `big` beside itself on the same disk, the reference."""
    # Each copy starts with nothing dirty waiting to be written back.
    os.sync()
    copy = big.with_name("copy.bin")
    seconds, _ = await _timed(["cp", str(big), str(copy)], CURL_TIMEOUT_S)
    copy.unlink()
    os.sync()
    return seconds


def big_upload_vidd(folder: Path) -> Vidd:
    """A vidd that takes a file of SIZE bytes, with little free disk asked for beside it."""
    return Vidd(folder, web={"max_upload_bytes": 4 * GiB}, storage={"min_free_bytes": 64 * MiB})


def curl_multipart(curl: str, big: Path, url: str) -> list[str]:
    """curl POSTing `big` as multipart to vidd at `url`; prints the HTTP status."""
    return [
        curl, "-sS", "-o", "/dev/null", "-w", "%{http_code}",
        "-F", f"file=@{big};filename=big.bin", f"{url}/api/jobs",
    ]  # fmt: skip


async def case_upload(ctx: Context) -> list[Result]:
    folder = ctx.workdir / "upload"
    folder.mkdir(parents=True, exist_ok=True)
    if msg := short_of_space(folder):
        return [Result("upload", "2 GiB multipart POST", msg, target="ratio <= 2.0")]
    curl = shutil.which("curl")
    if curl is None:
        return [Result("upload", "2 GiB multipart POST", "skipped: no curl (apt install curl)")]
    big = folder / "big.bin"
    make_random(big, SIZE)
    try:
        cp_s = await cp_seconds(big)
        with big_upload_vidd(folder) as vidd:
            await asyncio.sleep(1.0)
            before = rss_bytes(vidd.pid)
            with RssSampler(vidd.pid) as rss:
                up_s, out = await _timed(curl_multipart(curl, big, vidd.url), CURL_TIMEOUT_S)
            status = out.decode().strip()
            leftovers = [p.name for p in vidd.config.storage.tmp_dir.iterdir()]
    finally:
        big.unlink(missing_ok=True)
    growth = (rss.peak - before) / MB
    ratio = up_s / cp_s
    size_note = f"{SIZE / GiB:.0f} GiB"
    return [
        Result(
            case="upload",
            figure=f"{size_note} multipart POST (curl -F), time to answer",
            measured=f"{up_s:.2f} s ({SIZE / up_s / MB:.0f} MB/s), HTTP {status}",
            reference=f"cp {cp_s:.2f} s ({SIZE / cp_s / MB:.0f} MB/s)",
            ratio=ratio,
            target="ratio <= 2.0",
            met=ratio <= 2.0 and status == "422",
            note="422 expected: random bytes are not a video; the time includes the probe"
            + (f"; left in tmp/: {leftovers}" if leftovers else ""),
            data={"upload_s": up_s, "cp_s": cp_s, "http_status": status, "bytes": SIZE},
        ),
        Result(
            case="upload",
            figure="vidd RSS growth during the upload",
            measured=f"{growth:.1f} MB (peak {rss.peak / MB:.1f} MB)",
            reference=f"before {before / MB:.1f} MB",
            target="<= 20 MB",
            met=growth <= 20,
            note=f"{rss.samples} samples every 20 ms",
            data={"rss_before": before, "rss_peak": rss.peak, "samples": rss.samples},
        ),
    ]
