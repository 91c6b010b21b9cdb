"""The case `lone_job`: one clip dropped into an idle vidd, the time from the drop to `done`
minus one bare HandBrakeCLI encode of the same clip: vidd's own overhead on a lone job."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from .batch import _bare_one
from .harness import Context, JobWatch, Result, Vidd, percentile, stage

RUNS = 5
WAIT_S = 60.0  # per drop
SETTLE_S = 1.0  # after each run: the poster and the bare run's exit leave an idle CPU
TARGET_S = 0.3


async def case_lone_job(ctx: Context) -> list[Result]:
    return [result(*await lone_runs(ctx, "lone"))]


async def lone_runs(
    ctx: Context, folder: str, **sections: Any
) -> tuple[list[float], list[float], list[list[float]]]:
    """RUNS drops into one idle vidd (vidd's defaults but for `sections`), each after a bare
    run of the same clip: (drop -> done, the bare run, drop -> [queued, running]), seconds."""
    clip = ctx.clip10()
    bare_dir = ctx.workdir / "lone-bare"
    bare_dir.mkdir(parents=True, exist_ok=True)
    vidd_s: list[float] = []
    bare_s: list[float] = []
    stages: list[list[float]] = []
    with Vidd(ctx.workdir / folder, **sections) as vidd:
        names = [f"lone-{i}.avi" for i in range(RUNS)]
        staged = [stage(clip, vidd.data / "staging", n) for n in names]
        async with JobWatch(vidd) as watch:
            await asyncio.sleep(SETTLE_S)
            for i, path in enumerate(staged):
                # The reference first, on a copy of the same clip, with vidd idle.
                src = stage(clip, bare_dir, f"bare-{i}.avi")
                t0 = time.monotonic()
                await _bare_one(src, src.with_suffix(".mp4"))
                bare_s.append(time.monotonic() - t0)
                src.unlink()
                src.with_suffix(".mp4").unlink()
                await asyncio.sleep(SETTLE_S)

                name = path.name
                t0 = time.monotonic()
                os.rename(path, vidd.inbox / name)

                def ended(name: str = name) -> bool:
                    return any(
                        watch.when(name, s) for s in ("done", "failed", "rejected", "cancelled")
                    )

                try:
                    await watch.wait(ended, WAIT_S)
                except TimeoutError:
                    raise RuntimeError(
                        f"{name} did not end in {WAIT_S:.0f} s:\n{vidd.log_tail()}"
                    ) from None
                done = watch.when(name, "done")
                if done is None:
                    raise RuntimeError(f"{name} was not converted:\n{vidd.log_tail()}")
                vidd_s.append(done - t0)
                stages.append([(watch.when(name, s) or t0) - t0 for s in ("queued", "running")])
                await asyncio.sleep(SETTLE_S)
    return vidd_s, bare_s, stages


def result(vidd_s: list[float], bare_s: list[float], stages: list[list[float]]) -> Result:
    overhead = [v - b for v, b in zip(vidd_s, bare_s, strict=True)]
    p50 = percentile(overhead, 50)
    bare50 = percentile(bare_s, 50)
    return Result(
        case="lone_job",
        figure=f"drop -> done minus a bare encode (p50 of {RUNS})",
        measured=f"{p50:.2f} s (drop -> done p50 {percentile(vidd_s, 50):.2f} s)",
        reference=f"bare HandBrakeCLI p50 {bare50:.2f} s",
        ratio=percentile(vidd_s, 50) / bare50,
        target=f"overhead <= {TARGET_S:g} s",
        met=p50 <= TARGET_S,
        note="ratio: vidd's drop -> done p50 / the bare encode's p50; drop -> queued p50 "
        f"{percentile([q for q, _ in stages], 50):.2f} s, -> running p50 "
        f"{percentile([r for _, r in stages], 50):.2f} s",
        data={"vidd_s": vidd_s, "bare_s": bare_s, "overhead_s": overhead, "stages_s": stages},
    )
