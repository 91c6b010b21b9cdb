"""The case `slow_clients`: 1,000 connections that send a request head a byte at a time
(from 250 loopback addresses, 4 each), held open while one normal client asks
GET /api/status over and over; its latency against the same with no slow connections."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from .harness import Context, Result, Vidd, ms, percentile

SLOW = 1000
PER_ADDRESS = 4  # well under web.max_connections_per_client: they are all let in
REQUESTS = 400
TRICKLE_S = 1.0  # one more byte of the head this often: slow, never idle


async def latencies(url: str) -> list[float]:
    out: list[float] = []
    async with aiohttp.ClientSession() as session:
        for _ in range(REQUESTS):
            t0 = time.perf_counter()
            async with session.get(url) as r:
                await r.read()
                if r.status != 200:
                    raise RuntimeError(f"{url}: HTTP {r.status}")
            out.append(time.perf_counter() - t0)
    return out


async def hold_slow(port: int, stop: asyncio.Event) -> tuple[int, int]:
    """Open the slow connections and keep them trickling; (opened, still open at the end)."""
    writers: list[asyncio.StreamWriter] = []
    for i in range(SLOW):
        address = f"127.0.{3 + i // PER_ADDRESS // 250}.{1 + (i // PER_ADDRESS) % 250}"
        _, w = await asyncio.open_connection("127.0.0.1", port, local_addr=(address, 0))
        w.write(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        writers.append(w)
    while not stop.is_set():
        for w in writers:
            if not w.is_closing():
                w.write(b"X")
        try:
            await asyncio.wait_for(stop.wait(), TRICKLE_S)
        except TimeoutError:
            pass
    still = sum(not w.is_closing() for w in writers)
    for w in writers:
        w.close()
    return len(writers), still


async def case_slow_clients(ctx: Context) -> list[Result]:
    with Vidd(ctx.workdir / "slow", watch={"enabled": False}) as vidd:
        url = vidd.url + "/api/status"
        await latencies(url)  # warm up
        alone = await latencies(url)
        stop = asyncio.Event()
        holder = asyncio.create_task(hold_slow(vidd.config.web.port, stop))
        await asyncio.sleep(3.0)  # all opened and trickling (opening 1,000 takes ~1 s)
        crowded = await latencies(url)
        stop.set()
        opened, still = await holder
    p99_alone, p99_crowded = percentile(alone, 99), percentile(crowded, 99)
    return [
        Result(
            case="slow_clients",
            figure=f"GET /api/status p99 with {opened} slow connections open",
            measured=f"p50 {ms(percentile(crowded, 50))}, p99 {ms(p99_crowded)}",
            reference=f"none open: p50 {ms(percentile(alone, 50))}, p99 {ms(p99_alone)}",
            ratio=p99_crowded / p99_alone if p99_alone else None,
            target="p99 <= 100 ms",
            met=p99_crowded <= 0.100,
            note=f"{still} of {opened} still open when measured",
            data={"alone_s": alone, "crowded_s": crowded, "opened": opened, "still": still},
        )
    ]
