"""The case `drop_latency`: a complete file renamed into the inbox, with the default watch
settings; how long until its job is `running`."""

from __future__ import annotations

import asyncio
import os
import time

from .harness import Context, JobWatch, Result, Vidd, percentile, post, stage

DROPS = 10
WAIT_S = 30.0  # per drop: far above stable_seconds, so a fallback to it still shows
PAUSE_S = 0.5


async def case_drop_latency(ctx: Context) -> list[Result]:
    clip = ctx.clip10()
    with Vidd(ctx.workdir / "drop") as vidd:  # watch.* left at vidd's defaults
        stable = vidd.config.watch.stable_seconds
        quiet = vidd.config.watch.lease_quiet_seconds
        names = [f"drop-{i}.avi" for i in range(DROPS)]
        staged = [stage(clip, vidd.data / "staging", n) for n in names]
        running: list[float] = []
        queued: list[float] = []
        async with JobWatch(vidd) as watch:
            for path in staged:
                name = path.name
                t0 = time.monotonic()
                os.rename(path, vidd.inbox / name)

                def reached(status: str, name: str = name) -> bool:
                    return watch.when(name, status) is not None

                try:
                    await watch.wait(lambda: reached("running"), WAIT_S)
                except TimeoutError:
                    raise RuntimeError(f"{name} was not running after {WAIT_S:.0f} s") from None
                running.append((watch.when(name, "running") or t0) - t0)
                queued.append((watch.when(name, "queued") or t0) - t0)
                # Cancel it, so every drop meets an idle pool and an idle CPU.
                await post(f"{vidd.url}/api/jobs/{watch.ids[name]}/cancel")
                await watch.wait(lambda: reached("cancelled"), WAIT_S)
                await asyncio.sleep(PAUSE_S)
    p50, worst = percentile(running, 50), max(running)
    return [
        Result(
            case="drop_latency",
            figure=f"rename into inbox -> running (p50, max of {DROPS})",
            measured=f"p50 {p50:.2f} s, max {worst:.2f} s",
            reference=f"watch.stable_seconds {stable:g} s",
            ratio=p50 / stable,
            target="p50 <= 1.0 s",
            met=p50 <= 1.0,
            note=f"of which rename -> queued (the watcher's checks, lease quiet {quiet:g} s "
            "for a file written in place, and the probe unless a slot is free): "
            f"p50 {percentile(queued, 50):.2f} s",
            data={"running_s": running, "queued_s": queued, "stable_seconds": stable},
        )
    ]
