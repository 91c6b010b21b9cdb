"""The case `status_scale`: GET /api/status and GET /api/jobs?limit=50 from 50 concurrent
clients, and name searches (GET /api/jobs?q=...) from a few, with 100,000 jobs in the store
against the same with 100."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp

from vidd.job import Job, MediaInfo, Status, new_id, now
from vidd.store import Store

from .harness import Context, Result, Vidd, cpu_seconds, ms, percentile

SIZES = (100, 100_000)
CLIENTS = 50
WARMUP = 200  # requests before measuring: a daemon under load has its caches warm
REQUESTS = 4000  # per endpoint and store size...
MAX_S = 15.0  # ...or this long, whichever comes first
ENDPOINTS = {"status": "/api/status", "jobs": "/api/jobs?limit=50"}
# Name searches, as people typing into the page's search box send them: a few at a time,
# each request a different query and states (so no answer is the page cache's), each
# with the `total` of its matches. Names are "holiday 000042.mp4" (see fill_store).
SEARCH_CLIENTS = 4
SEARCH_REQUESTS = 400
SEARCH_WARMUP = 20
SEARCH_P99_S = 0.250  # a search box that answers within a keystroke or two
SEARCH_STATES = ("done", "failed", "rejected", "cancelled")
SEARCHES: dict[str, tuple[str, Callable[[random.Random, int], str]]] = {
    "search_rare": ("one job's number, 6 characters", lambda rng, n: f"{rng.randrange(n):06d}"),
    "search_common": (
        '"holiday" in any case: every job',
        lambda rng, n: "".join(c.upper() if rng.random() < 0.5 else c for c in "holiday"),
    ),
    "search_2char": ("2 digits: no trigram, a scan", lambda rng, n: f"{rng.randrange(100):02d}"),
}
# What a store that has run for a while holds: mostly finished jobs, some failures.
MIX = ((Status.DONE, 90), (Status.FAILED, 5), (Status.REJECTED, 3), (Status.CANCELLED, 2))
SOURCE = MediaInfo(size=52_428_800, duration=600.0, width=1920, height=1080,
                   video_codec="h264", audio_codecs=("aac",))  # fmt: skip
OUTPUT = dataclasses.replace(SOURCE, size=31_457_280, width=1280, height=720)


async def fill_store(db: Path, count: int) -> None:
    """`count` finished jobs, inserted in bulk; done ones have a source and an output, like
    the jobs the pool finishes, so the pages are their real size."""
    statuses = [s for s, share in MIX for _ in range(share)]
    start = now() - timedelta(days=365)
    jobs = []
    for i in range(count):
        status = statuses[i % len(statuses)]
        at = start + timedelta(seconds=i * 60)
        jobs.append(
            Job(
                id=new_id(),
                name=f"holiday {i:06d}.mp4",
                status=status,
                profile="web",
                origin="inbox",
                source_ext=".mp4",
                created_at=at,
                started_at=at,
                finished_at=at,
                progress=1.0,
                source=SOURCE,
                output=OUTPUT if status is Status.DONE else None,
            )
        )
    async with Store(db) as store:
        await store.add_many(jobs)


def search_urls(
    base: str, query: Callable[[random.Random, int], str], count: int
) -> Callable[[], str]:
    """A new search for each call: the query, and a random choice of states to search in."""
    rng = random.Random(count)

    def url() -> str:
        states = [s for s in SEARCH_STATES if rng.random() < 0.5] or ["done"]
        return f"{base}/api/jobs?" + urlencode({"q": query(rng, count), "status": ",".join(states)})

    return url


async def load(
    url: str | Callable[[], str],
    clients: int = CLIENTS,
    requests: int = REQUESTS,
    warmup: int = WARMUP,
) -> dict[str, Any]:
    """`clients` clients, each sending the next request when the last is answered."""
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> float:
            t0 = time.perf_counter()
            async with session.get(url if isinstance(url, str) else url()) as r:
                await r.read()
                if r.status != 200:
                    raise RuntimeError(f"{url}: HTTP {r.status}")
            return time.perf_counter() - t0

        async def client(budget: list[int], deadline: float, out: list[float] | None) -> None:
            nonlocal errors
            while budget[0] > 0 and time.monotonic() < deadline:
                budget[0] -= 1
                try:
                    t = await one()
                except (aiohttp.ClientError, RuntimeError):
                    errors += 1
                    continue
                if out is not None:
                    out.append(t)

        warm = [warmup]
        await asyncio.gather(*(client(warm, time.monotonic() + MAX_S, None) for _ in range(10)))
        budget = [requests]
        t0 = time.monotonic()
        await asyncio.gather(*(client(budget, t0 + MAX_S, latencies) for _ in range(clients)))
        elapsed = time.monotonic() - t0
    return {
        "p50_s": percentile(latencies, 50),
        "p99_s": percentile(latencies, 99),
        "rps": len(latencies) / elapsed,
        "requests": len(latencies),
        "errors": errors,
        "seconds": elapsed,
    }


async def measure(ctx: Context, count: int) -> dict[str, dict[str, Any]]:
    vidd = Vidd(ctx.workdir / f"status-{count}")
    vidd.data.mkdir(parents=True, exist_ok=True)
    await fill_store(vidd.config.storage.db_path, count)
    out: dict[str, dict[str, Any]] = {}
    with vidd:
        for name, path in ENDPOINTS.items():
            cpu0, bench0 = cpu_seconds(vidd.pid), time.process_time()
            out[name] = await load(vidd.url + path)
            out[name]["vidd_cpu_s"] = cpu_seconds(vidd.pid) - cpu0
            out[name]["bench_cpu_s"] = time.process_time() - bench0
        for name, (_, query) in SEARCHES.items():
            cpu0, bench0 = cpu_seconds(vidd.pid), time.process_time()
            urls = search_urls(vidd.url, query, count)
            out[name] = await load(urls, SEARCH_CLIENTS, SEARCH_REQUESTS, warmup=SEARCH_WARMUP)
            out[name]["vidd_cpu_s"] = cpu_seconds(vidd.pid) - cpu0
            out[name]["bench_cpu_s"] = time.process_time() - bench0
    return out


async def case_status_scale(ctx: Context) -> list[Result]:
    small = await measure(ctx, SIZES[0])
    large = await measure(ctx, SIZES[1])
    return _results(small, large)


def _latency(run: dict[str, Any]) -> str:
    return f"p50 {ms(run['p50_s'])}, p99 {ms(run['p99_s'])}, {run['rps']:.0f} req/s"


def _results(small: dict[str, Any], large: dict[str, Any]) -> list[Result]:
    rows: list[Result] = []
    for name, path in ENDPOINTS.items():
        s, big = small[name], large[name]
        ratio = big["p50_s"] / s["p50_s"]
        met = big["p99_s"] <= 0.020 and ratio <= 1.5 and big["errors"] == 0
        rows.append(
            Result(
                case="status_scale",
                figure=f"GET {path}, {CLIENTS} clients, 100k jobs",
                measured=_latency(big),
                reference=f"100 jobs: {_latency(s)}",
                ratio=ratio,
                target="p99 <= 20 ms; p50 ratio <= 1.5",
                met=met,
                note=f"vidd CPU {big['vidd_cpu_s'] / big['seconds']:.0%} of a core, "
                f"bench client {big['bench_cpu_s'] / big['seconds']:.0%}; "
                f"{big['requests']} requests, {big['errors']} errors",
                data={"100": s, "100000": big},
            )
        )
    for name, (what, _) in SEARCHES.items():
        s, big = small[name], large[name]
        ratio = big["p50_s"] / s["p50_s"]
        met = big["p99_s"] <= SEARCH_P99_S and big["errors"] == 0
        rows.append(
            Result(
                case="status_scale",
                figure=f"GET /api/jobs?q= ({what}), {SEARCH_CLIENTS} clients, 100k jobs",
                measured=_latency(big),
                reference=f"100 jobs: {_latency(s)}",
                ratio=ratio,
                target=f"p99 <= {SEARCH_P99_S * 1000:.0f} ms",
                met=met,
                note=f"each request a new query and states (no cached answer); vidd CPU "
                f"{big['vidd_cpu_s'] / big['seconds']:.0%} of a core; "
                f"{big['requests']} requests, {big['errors']} errors",
                data={"100": s, "100000": big},
            )
        )
    return rows
