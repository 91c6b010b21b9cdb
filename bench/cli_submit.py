"""The case `cli_submit`: `vidd submit` of four clips, all sent at once (the default: three
uploads at a time, the daemon's default three encodes at a time), against the same four
submitted one after another, each waiting for its conversion before the next is sent
(what `vidd submit a b c d` did before). Both through the real command, in the same run,
to the same kind of fresh daemon."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from testkit.media import make_clip

from .harness import Context, Result, Vidd

FILES = 4
TIMEOUT_S = 110.0


def clips(ctx: Context) -> list[Path]:
    """Four copies of a 5 s 640x360 clip (MPEG-4/MP3 AVI), made once per run."""
    folder = ctx.workdir / "media" / "submit"
    first = folder / "clip-0.avi"
    if not first.exists():
        folder.mkdir(parents=True, exist_ok=True)
        make_clip(first, seconds=5, size="640x360", timeout=120.0)
    paths = [first]
    for i in range(1, FILES):
        copy = folder / f"clip-{i}.avi"
        if not copy.exists():
            copy.write_bytes(first.read_bytes())
        paths.append(copy)
    return paths


def submit(url: str, files: list[Path], cache: Path, *extra: str) -> float:
    """Seconds until `vidd submit` returns with every job done."""
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    env.pop("VIDD_TOKEN", None)
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "vidd", "submit", "--url", url, *extra, *map(str, files)],
        capture_output=True, text=True, timeout=TIMEOUT_S, env=env, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    if r.returncode != 0 or r.stdout.count("\tdone\t") != len(files):
        raise RuntimeError(f"vidd submit exited {r.returncode}: {r.stdout}{r.stderr}")
    return seconds


def _run(ctx: Context) -> tuple[float, float]:
    files = clips(ctx)
    with Vidd(ctx.workdir / "submit-parallel", watch={"enabled": False}) as vidd:
        at_once = submit(vidd.url, files, ctx.workdir / "submit-cache")
    with Vidd(ctx.workdir / "submit-serial", watch={"enabled": False}) as vidd:
        # one file per command, each waiting for its conversion: the old behaviour
        one_by_one = sum(submit(vidd.url, [f], ctx.workdir / "submit-cache") for f in files)
    return at_once, one_by_one


async def case_cli_submit(ctx: Context) -> list[Result]:
    at_once, one_by_one = await asyncio.to_thread(_run, ctx)
    return [
        Result(
            case="cli_submit",
            figure=f"`vidd submit` of {FILES} 5 s clips until all are done",
            measured=f"all at once: {at_once:.1f} s",
            reference=f"one after another: {one_by_one:.1f} s",
            ratio=at_once / one_by_one,
            target="< 1 (faster than one by one)",
            met=at_once < one_by_one,
            data={"at_once_s": at_once, "one_by_one_s": one_by_one},
        )
    ]
