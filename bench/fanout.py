"""The case `fanout`: 1,000 WebSocket clients on /ws while a real encode publishes progress;
the delay from publish to receipt at every client, and vidd's CPU time per delivered message.

Publish time: vidd's HandBrakeCLI is a pass-through wrapper (stamp_handbrake.py) around
the real one, which notes the moment each Progress block went into vidd's pipe, keyed by
its progress value. A client's receipt of a progress message with that value, minus that
moment, is the delay: it covers vidd's parsing, its throttle, the store write, the hub
and the socket, and the client's own reading. Values HandBrake printed more than once
are ambiguous and left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from .harness import (
    HANDBRAKE,
    Context,
    JobWatch,
    MiB,
    Result,
    Vidd,
    cpu_seconds,
    ms,
    percentile,
    stage,
)

CLIENTS = 1000
CONNECT_AT_ONCE = 50
CONNECT_TIMEOUT_S = 60.0
ENCODE_TIMEOUT_S = 120.0
SETTLE_S = 1.0  # after `done`, for the last messages in flight
NAME = "long.avi"
COMPRESS = 15  # permessage-deflate, which Chrome and Firefox offer on every WebSocket


@dataclass
class Client:
    ws: aiohttp.ClientWebSocketResponse
    received: list[tuple[float, str]] = field(default_factory=list)
    dropped_at: float | None = None  # the server closed it, or the connection broke
    task: asyncio.Task[None] | None = None

    async def read(self) -> None:
        async for msg in self.ws:
            t = time.monotonic()
            if msg.type is aiohttp.WSMsgType.TEXT:
                self.received.append((t, msg.data))  # parsed after the measurement
        self.dropped_at = time.monotonic()


def install_wrapper(folder: Path) -> Path:
    source = Path(__file__).with_name("stamp_handbrake.py").read_text(encoding="utf-8")
    wrapper = folder / "HandBrakeCLI-stamped"
    wrapper.write_text(f"#!{sys.executable}\n{source}", encoding="utf-8")
    wrapper.chmod(0o755)
    return wrapper


def read_stamps(path: Path) -> dict[float, float]:
    """progress value -> when it was published, for values published exactly once."""
    times: dict[float, list[float]] = defaultdict(list)
    with contextlib.suppress(FileNotFoundError), open(path, encoding="ascii") as f:
        for line in f:
            value, sent = line.split()
            times[float(value)].append(float(sent))
    return {v: ts[0] for v, ts in times.items() if len(ts) == 1 and v > 0}


async def connect(session: aiohttp.ClientSession, url: str) -> Client:
    ws = await session.ws_connect(url, max_msg_size=16 * MiB, heartbeat=None, compress=COMPRESS)
    first = await ws.receive(timeout=30)
    if first.type is not aiohttp.WSMsgType.TEXT or '"snapshot"' not in first.data[:40]:
        raise RuntimeError(f"no snapshot: {first.type} {str(first.data)[:80]}")
    client = Client(ws)
    client.task = asyncio.create_task(client.read())
    return client


async def case_fanout(ctx: Context) -> list[Result]:
    clip = ctx.clip60()
    folder = ctx.workdir / "fanout"
    folder.mkdir(parents=True, exist_ok=True)
    stamps_path = folder / "stamps.txt"
    vidd = Vidd(
        folder,
        env={"VIDD_BENCH_STAMPS": str(stamps_path), "VIDD_BENCH_REAL_HANDBRAKE": HANDBRAKE},
        encode={"handbrake": str(install_wrapper(folder))},
    )
    clients: list[Client] = []
    with vidd:
        nofile = vidd.nofile_limit()
        staged = stage(clip, vidd.data / "staging", NAME)
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        async with aiohttp.ClientSession(connector=connector) as session:
            t_connect = time.monotonic()
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                while len(clients) < CLIENTS:
                    n = min(CONNECT_AT_ONCE, CLIENTS - len(clients))
                    clients += await asyncio.gather(
                        *(connect(session, vidd.ws_url) for _ in range(n))
                    )
            connect_s = time.monotonic() - t_connect
            async with JobWatch(vidd) as watch:
                cpu0, bench0 = cpu_seconds(vidd.pid), time.process_time()
                t0 = time.monotonic()
                os.rename(staged, vidd.inbox / NAME)

                def finished() -> bool:
                    return any(watch.when(NAME, s) for s in ("done", "failed", "rejected"))

                await watch.wait(finished, ENCODE_TIMEOUT_S)
                await asyncio.sleep(SETTLE_S)
                t1 = time.monotonic()
                cpu1, bench1 = cpu_seconds(vidd.pid), time.process_time()
                if watch.when(NAME, "done") is None:
                    raise RuntimeError(f"the encode did not finish well:\n{vidd.log_tail()}")
            dropped = sum(1 for c in clients if c.dropped_at is not None)
            for c in clients:
                if c.task is not None:
                    c.task.cancel()
            await asyncio.gather(*(c.task for c in clients if c.task), return_exceptions=True)
    return _results(clients, read_stamps(stamps_path), t0, t1, cpu1 - cpu0, bench1 - bench0,
                    dropped, connect_s, nofile)  # fmt: skip


def _results(
    clients: list[Client],
    stamps: dict[float, float],
    t0: float,
    t1: float,
    vidd_cpu: float,
    bench_cpu: float,
    dropped: int,
    connect_s: float,
    nofile: int,
) -> list[Result]:
    delays: list[float] = []
    receipts: dict[float, list[float]] = defaultdict(list)  # value -> receipt times
    delivered = 0
    unmatched = 0
    for c in clients:
        for t, text in c.received:
            if not t0 <= t <= t1:
                continue
            delivered += 1
            msg = json.loads(text)
            job = msg.get("job") or {}
            if msg.get("type") != "job" or job.get("status") != "running":
                continue
            value = float(job.get("progress") or 0)
            if value <= 0:
                continue
            sent = stamps.get(value)
            if sent is None:
                unmatched += 1
                continue
            delays.append(t - sent)
            receipts[value].append(t)
    spreads = [max(ts) - min(ts) for ts in receipts.values() if len(ts) > 1]
    # The first client to get a message shows the path before the fan-out proper.
    firsts = [min(ts) - stamps[v] for v, ts in receipts.items()]
    p50, p99 = percentile(delays, 50), percentile(delays, 99)
    per_msg_us = vidd_cpu / delivered * 1e6 if delivered else float("nan")
    met = bool(delays) and p99 <= 0.100 and dropped == 0 and len(clients) == CLIENTS
    return [
        Result(
            case="fanout",
            figure=f"{len(clients)} WebSocket clients: publish -> receipt",
            measured=f"p50 {ms(p50)}, p99 {ms(p99)}, max {ms(max(delays, default=0))}; "
            f"{dropped} dropped",
            reference="-",
            target="p99 <= 100 ms, none dropped",
            met=met,
            note=f"{len(receipts)} progress messages x {len(clients)} clients "
            f"({len(delays)} receipts timed, {unmatched} with an ambiguous value); "
            f"first client p50 {ms(percentile(firsts, 50))}, "
            f"spread first->last client p50 {ms(percentile(spreads, 50))}; "
            f"vidd CPU {per_msg_us:.0f} us per delivered message ({delivered} messages, "
            f"{vidd_cpu:.2f} s); bench client CPU {bench_cpu:.2f} s; "
            f"connecting took {connect_s:.1f} s; vidd's fd limit {nofile}",
            data={
                "clients": len(clients),
                "dropped": dropped,
                "delay_p50_s": p50,
                "delay_p99_s": p99,
                "delay_max_s": max(delays, default=0),
                "timed_receipts": len(delays),
                "progress_messages": len(receipts),
                "first_client_p50_s": percentile(firsts, 50),
                "first_client_max_s": max(firsts, default=0),
                "spread_p50_s": percentile(spreads, 50),
                "spread_max_s": max(spreads, default=0),
                "delivered": delivered,
                "vidd_cpu_s": vidd_cpu,
                "vidd_cpu_per_message_us": per_msg_us,
                "bench_cpu_s": bench_cpu,
                "window_s": t1 - t0,
                "vidd_nofile_limit": nofile,
            },
        ),
        Result(
            case="fanout",
            figure="vidd CPU per delivered message",
            measured=f"{per_msg_us:.0f} us",
            reference="-",
            note="all of vidd's CPU time during the encode, divided by messages received",
            data={},
        ),
    ]
