"""The case `playback`: a 300 MB MP4 served by vidd from videos/, downloaded whole with curl
and read with 500 random Range requests, against Debian's nginx serving the same file
from the same folder on another loopback port."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import aiohttp

from testkit.daemon import free_port
from testkit.jobs import make_job
from testkit.media import duration
from vidd.job import MediaInfo, Status, new_id, now
from vidd.store import Store

from .harness import Context, Result, Vidd, make_big_mp4, ms, percentile

SIZE = 300_000_000
RANGES = 500
RANGE_BYTES = 256 * 1024  # what a player asks for around a seek point
DOWNLOADS = 5  # whole downloads per server, alternating; the median counts
SEED = 5
MB = 1_000_000

NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    types {{ video/mp4 mp4; image/jpeg jpg; }}
    default_type application/octet-stream;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location /videos/ {{ alias {root}/; }}
    }}
}}
"""


async def insert_done_job(db: Path, video: Path) -> str:
    """A finished job, recorded through the Store as the pool would, for a file already
    in place: the bench serves a 300 MB file without converting one."""
    size = video.stat().st_size
    info = MediaInfo(size, duration(video), 1280, 720, "h264", ("aac",))
    job_id = new_id()
    store = Store(db)
    await store.open()
    try:
        job = make_job(
            id=job_id,
            name="big.mp4",
            source_ext=".mp4",
            created_at=now() - timedelta(minutes=5),
            source=info,
        )
        await store.add(job)
        await store.transition(job_id, Status.RUNNING)
        await store.transition(job_id, Status.DONE, output=info)
    finally:
        await store.close()
    return job_id


class Nginx:
    def __init__(self, folder: Path, root: Path) -> None:
        self.folder = folder
        self.port = free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.conf = folder / "nginx.conf"
        self.conf.write_text(NGINX_CONF.format(tmp=folder, port=self.port, root=root))
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Nginx:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.proc = subprocess.Popen(
            [nginx, "-e", str(self.folder / "error.log"), "-p", str(self.folder), "-c",
             str(self.conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        import socket

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {(self.folder / 'error.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nginx did not start")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def curl_download(url: str) -> tuple[float, int]:
    """Seconds and bytes for one whole download (timed by curl itself)."""
    curl = shutil.which("curl") or "curl"
    proc = await asyncio.create_subprocess_exec(
        curl, "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{time_total}", url,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    code, size, seconds = out.decode().split()
    if proc.returncode != 0 or code != "200":
        raise RuntimeError(f"download of {url} failed: HTTP {code}, exit {proc.returncode}")
    return float(seconds), int(size)


async def ranges(url: str, video: Path, offsets: list[int]) -> list[float]:
    """Latency of each Range request, one after another on one keep-alive connection.
    The bytes of the first few are checked against the file."""
    latencies: list[float] = []
    with open(video, "rb") as f:
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            for i, start in enumerate(offsets):
                end = start + RANGE_BYTES - 1
                t0 = time.perf_counter()
                async with session.get(url, headers={"Range": f"bytes={start}-{end}"}) as r:
                    body = await r.read()
                latencies.append(time.perf_counter() - t0)
                if r.status != 206 or len(body) != RANGE_BYTES:
                    raise RuntimeError(
                        f"{url}: range {start}-{end}: HTTP {r.status}, {len(body)} bytes"
                    )
                if i < 20 and body != os.pread(f.fileno(), RANGE_BYTES, start):
                    raise RuntimeError(f"{url}: range {start}-{end}: wrong bytes")
    return latencies


async def case_playback(ctx: Context) -> list[Result]:
    folder = ctx.workdir / "playback"
    vidd = Vidd(folder)
    videos = vidd.config.storage.videos_dir
    videos.mkdir(parents=True, exist_ok=True)
    tmp_video = make_big_mp4(folder / "big.mp4", SIZE)
    job_id = await insert_done_job(vidd.config.storage.db_path, tmp_video)
    video = videos / f"{job_id}.mp4"
    os.rename(tmp_video, video)
    size = video.stat().st_size
    # Both servers read the file from the page cache: ffmpeg just wrote it.
    rng = random.Random(SEED)
    offsets = [rng.randrange(0, size - RANGE_BYTES) for _ in range(RANGES)]
    with vidd, Nginx(folder / "nginx", videos) as nginx:
        urls = {
            "vidd": f"{vidd.url}/videos/{job_id}.mp4",
            "nginx": f"http://127.0.0.1:{nginx.port}/videos/{job_id}.mp4",
        }
        whole: dict[str, list[float]] = {"vidd": [], "nginx": []}
        for _ in range(DOWNLOADS):
            for server, url in urls.items():
                seconds, got = await curl_download(url)
                if got != size:
                    raise RuntimeError(f"{server}: got {got} of {size} bytes")
                whole[server].append(seconds)
        lat = {server: await ranges(url, video, offsets) for server, url in urls.items()}
    rate = {s: size / percentile(t, 50) / MB for s, t in whole.items()}
    ratio = rate["vidd"] / rate["nginx"]
    p = {s: (percentile(v, 50), percentile(v, 99)) for s, v in lat.items()}
    return [
        Result(
            case="playback",
            figure=f"{size / MB:.0f} MB MP4, whole download (curl, median of {DOWNLOADS})",
            measured=f"{rate['vidd']:.0f} MB/s",
            reference=f"nginx {rate['nginx']:.0f} MB/s",
            ratio=ratio,
            target="ratio >= 0.8",
            met=ratio >= 0.8,
            data={"size": size, "seconds": whole},
        ),
        Result(
            case="playback",
            figure=f"{RANGES} random Range requests of {RANGE_BYTES // 1024} KiB",
            measured=f"p50 {ms(p['vidd'][0])}, p99 {ms(p['vidd'][1])}",
            reference=f"nginx p50 {ms(p['nginx'][0])}, p99 {ms(p['nginx'][1])}",
            ratio=p["vidd"][1] / p["nginx"][1],
            target="p99 <= 20 ms",
            met=p["vidd"][1] <= 0.020,
            note="ratio: p99 against nginx's p99; one keep-alive connection, one at a time",
            data={s: {"p50_s": v[0], "p99_s": v[1], "max_s": max(lat[s])} for s, v in p.items()},
        ),
    ]
