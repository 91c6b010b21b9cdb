"""The case `repackage`: a 10 s 720p H.264/AAC MP4 (what a phone writes) dropped into vidd
with a profile that repackages it (ffmpeg stream copy, index first), against the same clip
through the same profile's encode (repackage off): running -> done, as a ratio."""

from __future__ import annotations

import asyncio
import os
import statistics
from pathlib import Path

from testkit.daemon import get_json

from .harness import Context, JobWatch, Result, Vidd, run, stage

RUNS = 2
WAIT_S = 90.0
# The same HandBrake arguments for both, so the only difference is the copy.
PROFILES = """
[encode.profiles.copy]
args = ["-e", "x264", "-q", "22", "-B", "96", "-O"]
repackage = true

[encode.profiles.encode]
args = ["-e", "x264", "-q", "22", "-B", "96", "-O"]
repackage = false
"""


def phone_clip(ctx: Context) -> Path:
    """10 s of 720p H.264 (High, 4:2:0) with AAC audio, made once per run."""
    path = ctx.workdir / "media" / "phone10.mp4"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        run(
            [
                "ffmpeg", "-v", "error", "-y",
                "-f", "lavfi", "-i", "testsrc=size=1280x720:rate=30",
                "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
                "-t", "10", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-preset", "veryfast",
                "-c:a", "aac", str(path),
            ]
        )  # fmt: skip
    return path


async def _convert(ctx: Context, profile: str) -> tuple[list[float], list[bool]]:
    """Seconds from running to done for each drop, and whether each was repackaged."""
    clip = phone_clip(ctx)
    seconds: list[float] = []
    repackaged: list[bool] = []
    folder = ctx.workdir / f"repackage-{profile}"
    with Vidd(folder, text=PROFILES, encode={"default_profile": profile}) as vidd:
        async with JobWatch(vidd) as watch:
            for i in range(RUNS):
                name = f"phone-{profile}-{i}.mp4"
                staged = stage(clip, vidd.data / "staging", name)
                os.rename(staged, vidd.inbox / name)

                def ended(name: str = name) -> bool:
                    return any(watch.when(name, s) for s in ("done", "failed", "rejected"))

                await watch.wait(ended, WAIT_S)
                start, done = watch.when(name, "running"), watch.when(name, "done")
                if start is None or done is None:
                    raise RuntimeError(f"{name} did not convert:\n{vidd.log_tail()}")
                seconds.append(done - start)
                job = get_json(f"{vidd.url}/api/jobs/{watch.ids[name]}")
                repackaged.append(bool(job["repackaged"]))
                await asyncio.sleep(0.5)  # the poster and the record settle
    return seconds, repackaged


async def case_repackage(ctx: Context) -> list[Result]:
    copy_s, copied = await _convert(ctx, "copy")
    encode_s, encoded = await _convert(ctx, "encode")
    mine, reference = statistics.median(copy_s), statistics.median(encode_s)
    ratio = mine / reference
    return [
        Result(
            case="repackage",
            figure="10 s 720p H.264/AAC MP4, running -> done (median of 2)",
            measured=f"repackaged {mine:.2f} s",
            reference=f"encoded {reference:.2f} s (same profile, repackage off)",
            ratio=ratio,
            target="ratio <= 0.2",
            met=ratio <= 0.2 and all(copied) and not any(encoded),
            note="" if all(copied) else "a drop was not repackaged: see the vidd log",
            data={"repackaged_s": copy_s, "encoded_s": encode_s, "copied": copied},
        )
    ]
