"""The bench's own harness: a real `python -m vidd serve` on loopback in a temporary data
folder, samplers for its memory and CPU, media made with ffmpeg, a live view of its jobs
over the WebSocket, and the Result rows the table is made of.

Nothing here is imported from tests/: the bench must run on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
FFMPEG = shutil.which("ffmpeg") or "ffmpeg"
HANDBRAKE = shutil.which("HandBrakeCLI") or "/usr/bin/HandBrakeCLI"
# The default `web` profile, as the issue states it: the reference runs use exactly these.
WEB_ARGS = ["-e", "x264", "-q", "22", "-r", "15", "-B", "96", "-O"]
CLK_TCK = os.sysconf("SC_CLK_TCK")
MiB = 1 << 20
GiB = 1 << 30


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_bytes(pid: int) -> int:
    """VmRSS of one process (its threads included, its children not)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (not of its waited-for children)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        raw = f.read()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


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


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(value)


def write_config(folder: Path, **sections: dict[str, Any]) -> Path:
    """A config.toml with vidd's defaults, except a data folder in `folder`, a free loopback
    port, a small disk guard and a short shutdown; `sections` override keys."""
    base: dict[str, dict[str, Any]] = {
        "storage": {"data_dir": str(folder / "var"), "min_free_bytes": 64 * MiB},
        "web": {"host": "127.0.0.1", "port": free_port()},
        # Only how long a stop waits for encodes: the bench stops daemons between cases.
        "daemon": {"shutdown_timeout_s": 5.0},
    }
    for name, keys in sections.items():
        base.setdefault(name, {}).update(keys)
    lines: list[str] = []
    for name, keys in base.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in keys.items()]
        lines.append("")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


class Vidd:
    """A vidd started as `python -m vidd serve --config ...`, the way a user runs it."""

    def __init__(self, folder: Path, env: dict[str, str] | None = None, **sections: Any) -> None:
        from vidd import config as config_mod  # the bench measures this checkout's vidd

        self.folder = folder
        self.config_path = write_config(folder, **sections)
        self.config = config_mod.load(self.config_path)
        self.env = env or {}
        self.log_path = folder / "vidd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.config.web.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.config.web.port}/ws"

    @property
    def data(self) -> Path:
        return self.config.storage.data_dir

    @property
    def inbox(self) -> Path:
        return self.config.storage.inbox_dir

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> Vidd:
        self.data.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "vidd", "serve", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
                cwd=self.folder,
                # Its own session, as systemd gives a service: on a kernel with autogroup
                # scheduling it then gets its own share of the CPU, not a share of ours.
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vidd exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"vidd did not answer within {timeout} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 20.0) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> Vidd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def nofile_limit(self) -> int:
        with open(f"/proc/{self.pid}/limits", encoding="ascii") as f:
            for line in f:
                if line.startswith("Max open files"):
                    return int(line.split()[3])
        return -1


# --- media --------------------------------------------------------------------------------


def run(args: list[str], timeout: float = 120.0) -> None:
    subprocess.run(args, check=True, timeout=timeout, stdin=subprocess.DEVNULL)


def make_clip(path: Path, seconds: float = 10.0, size: str = "1280x720") -> Path:
    """A test pattern with a tone: MPEG-4 video and MP3 audio in AVI, 25 fps, like the
    project's test clips but 720p, so it needs a real conversion."""
    run(
        [
            FFMPEG, "-v", "error", "-y",
            "-f", "lavfi", "-i", f"testsrc=size={size}:rate=25",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
            "-t", str(seconds), "-c:v", "mpeg4", "-q:v", "5", "-c:a", "libmp3lame", str(path),
        ]
    )  # fmt: skip
    return path


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


def media_duration(path: Path) -> float:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    ).stdout
    return float(json.loads(out)["format"]["duration"])


# --- watching vidd's jobs -----------------------------------------------------------------


class JobWatch:
    """One WebSocket client that notes when each job (by name) first reaches each state,
    in time.monotonic() of this process."""

    def __init__(self, vidd: Vidd) -> None:
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
            make_clip(path, seconds=10)
        return path

    def clip60(self) -> Path:
        """60 s of 720p: six of the 10 s clip, joined."""
        path = self.workdir / "media" / "clip60.avi"
        if not path.exists():
            concat_clip([self.clip10()] * 6, path)
        return path
