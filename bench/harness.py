"""The bench's own harness: vidd as the bench runs it (built on testkit's Daemon), samplers
for its memory and CPU, the bench's larger media, a live view of its jobs over the
WebSocket, and the Result rows the table is made of.

The daemon, its config and the clips come from testkit/, which the tests use too; nothing
is imported from tests/.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Self

import aiohttp

from testkit.daemon import Daemon, write_config
from testkit.media import FFMPEG, make_clip

HANDBRAKE = shutil.which("HandBrakeCLI") or "/usr/bin/HandBrakeCLI"
# The default `web` profile, as the issue states it: the reference runs use exactly these.
WEB_ARGS = ["-e", "x264", "-q", "22", "-r", "15", "-B", "96", "-O"]
CLK_TCK = os.sysconf("SC_CLK_TCK")
MiB = 1 << 20
GiB = 1 << 30
# The bench runs vidd's defaults but for these: the data folder beside the config, a small
# disk guard, and a short wait for encodes at a stop (the bench stops daemons between cases).
BENCH_CONFIG: Mapping[str, Mapping[str, Any]] = {
    "storage": {"data_dir": "var", "min_free_bytes": 64 * MiB},
    "daemon": {"shutdown_timeout_s": 5.0},
}


# --- results ----------------------------------------------------------------------------


@dataclass
class Result:
    """One row of the table: a figure, what it was measured against, and the verdict."""

    case: str
    figure: str
    measured: str
    reference: str = "-"
    ratio: float | None = None
    target: str = "-"
    met: bool | None = None  # None: skipped, failed to run, or no target
    note: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return {True: "met", False: "MISSED", None: "-"}[self.met]

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["verdict"] = self.verdict
        return d


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (0-100) by linear interpolation between closest ranks."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


# --- processes ----------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    """VmRSS of one process (its threads included, its children not)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _cpu_ticks(pid: int) -> list[int]:
    """utime, stime, cutime and cstime of one process (fields 14 to 17 of stat(5))."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        raw = f.read()
    return [int(x) for x in raw[raw.rindex(")") + 2 :].split()[11:15]]


def cpu_seconds_with_children(pid: int) -> float:
    """utime + stime of one process and of the children it has waited for."""
    return sum(_cpu_ticks(pid)) / CLK_TCK


def has_children(pid: int) -> bool:
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as f:
            if f.read().strip():
                return True
    return False


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (not of its waited-for children)."""
    return sum(_cpu_ticks(pid)[:2]) / CLK_TCK


class RssSampler:
    """Samples one process's VmRSS every `interval` seconds in a thread: the peak and the first."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.first = rss_bytes(pid)
        self.peak = self.first
        self.samples = 1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                value = rss_bytes(self.pid)
            except (FileNotFoundError, ProcessLookupError):
                return
            self.samples += 1
            self.peak = max(self.peak, value)


class Vidd(Daemon):
    """A vidd started as `python -m vidd serve --config ...`, the way a user runs it: with
    vidd's defaults but for BENCH_CONFIG, a free port and `sections`, no --verbose, and in a
    session of its own, as systemd gives a service (on a kernel with autogroup scheduling it
    then gets its own share of the CPU, not a share of ours). `with` starts and stops it."""

    def __init__(self, folder: Path, env: dict[str, str] | None = None, **sections: Any) -> None:
        path = write_config(folder, defaults=BENCH_CONFIG, **sections)
        super().__init__(path, env, verbose=False, own_session=True)

    def start(self, timeout: float = 30.0) -> Self:
        self.data.mkdir(parents=True, exist_ok=True)
        return super().start(timeout)

    def nofile_limit(self) -> int:
        with open(f"/proc/{self.pid}/limits", encoding="ascii") as f:
            for line in f:
                if line.startswith("Max open files"):
                    return int(line.split()[3])
        return -1


# --- media --------------------------------------------------------------------------------


def run(args: list[str], timeout: float = 120.0) -> None:
    subprocess.run(args, check=True, timeout=timeout, stdin=subprocess.DEVNULL)


def concat_clip(parts: list[Path], path: Path) -> Path:
    """Join clips of the same format without re-encoding (ffmpeg's concat demuxer)."""
    listing = path.with_suffix(".txt")
    listing.write_text("".join(f"file '{p}'\n" for p in parts), encoding="utf-8")
    run([FFMPEG, "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing),
         "-c", "copy", str(path)])  # fmt: skip
    listing.unlink()
    return path


def make_big_mp4(path: Path, size_bytes: int = 300_000_000) -> Path:
    """A real H.264/AAC MP4 of `size_bytes`, index first: 10 s of lossless x264 (ultrafast),
    looped with stream copy until the size is reached."""
    seg = path.with_name("segment.mp4")
    run(
        [
            FFMPEG, "-v", "error", "-y",
            "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
            "-t", "10", "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", "-c:a", "aac",
            str(seg),
        ]
    )  # fmt: skip
    loops = size_bytes // max(1, seg.stat().st_size) + 1
    run(
        [
            FFMPEG, "-v", "error", "-y", "-stream_loop", str(loops), "-i", str(seg),
            "-c", "copy", "-fs", str(size_bytes), "-movflags", "+faststart", str(path),
        ]
    )  # fmt: skip
    seg.unlink()
    return path


# --- watching vidd's jobs -----------------------------------------------------------------


class JobWatch:
    """One WebSocket client that notes when each job (by name) first reaches each state,
    in time.monotonic() of this process."""

    def __init__(self, vidd: Daemon) -> None:
        self.vidd = vidd
        self.seen: dict[tuple[str, str], float] = {}  # (name, status) -> first seen
        self.ids: dict[str, str] = {}  # name -> job id
        self._changed = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> JobWatch:
        self._session = aiohttp.ClientSession()
        ws = await self._session.ws_connect(self.vidd.ws_url, max_msg_size=64 * MiB)
        first = await ws.receive_json(timeout=10)
        assert first["type"] == "snapshot", first
        self._task = asyncio.create_task(self._read(ws))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._session is not None:
            await self._session.close()

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(ws.close)
            async for msg in ws:
                t = time.monotonic()
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                if data.get("type") != "job":
                    continue
                job = data["job"]
                self.ids[job["name"]] = job["id"]
                self.seen.setdefault((job["name"], job["status"]), t)
                self._changed.set()

    def when(self, name: str, status: str) -> float | None:
        return self.seen.get((name, status))

    async def wait(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Until predicate() holds; TimeoutError after `timeout` seconds."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()


async def post(url: str) -> int:
    async with aiohttp.ClientSession() as s, s.post(url) as r:
        await r.read()
        return r.status


def stage(src: Path, folder: Path, name: str) -> Path:
    """A complete, closed copy of `src` beside the inbox, ready to be renamed into it."""
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / name
    shutil.copyfile(src, dst)
    return dst


# --- one run's shared state ---------------------------------------------------------------


class Context:
    """What the cases of one run share: the work folder, media made once, measurements
    that serve several cases (the batch serves batch, first_result and memory)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.cache: dict[str, Any] = {}

    def clip10(self) -> Path:
        """The 10 s 720p clip, made once per run."""
        path = self.workdir / "media" / "clip10.avi"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            # Like the tests' clip (MPEG-4/MP3 AVI, 25 fps) but 720p: a real conversion.
            make_clip(path, seconds=10, size="1280x720", timeout=120.0)
        return path

    def clip60(self) -> Path:
        """60 s of 720p: six of the 10 s clip, joined."""
        path = self.workdir / "media" / "clip60.avi"
        if not path.exists():
            concat_clip([self.clip10()] * 6, path)
        return path
