"""What strangers can take is bounded: uploads at once, the queue, HandBrake scans at
once, and disk space promised to uploads in flight. Real app, real sockets, real
HandBrakeCLI; the disk is a small tmpfs (root only)."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from testkit.jobs import make_job
from testkit.tmpfs import tiny_disk
from vidd import probe as probe_mod
from vidd.job import Status
from vidd.web.app import create_app
from vidd.web.keys import COUNTERS, SERVICES

MiB = 1 << 20


async def start_upload(client, size: int) -> asyncio.StreamWriter:
    """Open an upload that declares `size` bytes and sends only its first few."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    head = b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.avi"\r\n\r\n'
    lines = [
        "POST /api/jobs HTTP/1.1",
        f"Host: 127.0.0.1:{client.port}",
        "Content-Type: multipart/form-data; boundary=x",
        f"Content-Length: {size}",
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + head + b"\0" * 1024)
    await writer.drain()
    return writer


async def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_uploads_at_once_are_capped_with_retry_after(aiohttp_client, make_config, clip):
    cfg = make_config(watch={"enabled": False}, web={"max_uploads": 2})
    client = await aiohttp_client(create_app(cfg))
    slow = [await start_upload(client, 50 * MiB) for _ in range(2)]
    await wait_until(lambda: client.app[COUNTERS].uploads_active == 2)
    form = aiohttp.FormData()
    form.add_field("file", clip.read_bytes(), filename="clip.avi")
    resp = await client.post("/api/jobs", data=form)
    assert resp.status == 429
    assert (await resp.json())["error"]["code"] == "busy"
    assert int(resp.headers["Retry-After"]) > 0
    for writer in slow:
        writer.close()
    await wait_until(lambda: client.app[COUNTERS].uploads_active == 0)
    form = aiohttp.FormData()
    form.add_field("file", clip.read_bytes(), filename="clip.avi")
    assert (await client.post("/api/jobs", data=form)).status == 201  # room again


async def test_a_full_queue_answers_429_and_keeps_nothing(aiohttp_client, make_config, clip):
    cfg = make_config(watch={"enabled": False}, encode={"max_queued": 1})
    client = await aiohttp_client(create_app(cfg))
    svc = client.app[SERVICES]
    waiting = make_job(name="waiting.avi", status=Status.ADMITTING)
    await svc.store.add(waiting)  # one job in line (the pool never takes an admitting one)
    form = aiohttp.FormData()
    form.add_field("file", clip.read_bytes(), filename="clip.avi")
    resp = await client.post("/api/jobs", data=form)
    assert resp.status == 429
    body = await resp.json()
    assert body["error"]["code"] == "queue_full" and "max_queued" in body["error"]["message"]
    assert resp.headers["Retry-After"] == "30"
    assert list(svc.layout.tmp.iterdir()) == []
    assert [j.id for j in await svc.store.list_jobs()] == [waiting.id]


async def test_scans_run_at_most_one_per_core(make_config, clip, monkeypatch):
    """Before: 60 junk uploads ran 35 `HandBrakeCLI --scan` at once."""
    from vidd.intake import Intake
    from vidd.layout import Layout
    from vidd.store import Store

    running = peak = 0
    real = probe_mod.probe

    async def counted(handbrake, path, box=None, nice=0):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            return await real(handbrake, path, box, nice=nice)
        finally:
            running -= 1

    monkeypatch.setattr(probe_mod, "probe", counted)
    cfg = make_config(watch={"enabled": False})
    layout = Layout(cfg.storage)
    layout.make_dirs()
    async with Store(cfg.storage.db_path) as store:
        intake = Intake(cfg, store, layout)
        files = []
        for i in range(12):
            path = layout.tmp / f"in-{i}.avi"
            shutil.copyfile(clip, path)
            files.append(path)
        jobs = await asyncio.gather(*(intake.admit(p, "upload") for p in files))
    assert all(j.status is Status.QUEUED for j in jobs)
    assert peak == (os.cpu_count() or 1), peak


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 320 MiB tmpfs for the data folder (root only)."""
    with tiny_disk(tmp_path / "disk", "320m") as disk:
        yield disk


@pytest.mark.timeout(120)
async def test_parallel_uploads_never_take_the_disk_below_the_floor(
    aiohttp_client, make_config, small_disk
):
    """Before: ten parallel 96 MiB uploads went 167 MiB below min_free_bytes. Now each
    declared length is promised up front, across every upload."""
    floor = 64 * MiB
    cfg = make_config(
        watch={"enabled": False},
        storage={"data_dir": str(small_disk / "var"), "min_free_bytes": floor},
        web={"max_uploads": 20},
    )
    client = await aiohttp_client(create_app(cfg))
    lowest = [1 << 62]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            st = os.statvfs(small_disk)
            lowest[0] = min(lowest[0], st.f_bavail * st.f_frsize)
            stop.wait(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    size = 48 * MiB
    payload = os.urandom(MiB) * 48

    async def one() -> int:
        form = aiohttp.FormData()
        # not a video: 422 at the end
        form.add_field("file", io.BytesIO(payload), filename="noise.avi")
        resp = await client.post("/api/jobs", data=form)
        return resp.status

    try:
        statuses = await asyncio.gather(*(one() for _ in range(10)))
    finally:
        stop.set()
        sampler.join()
    accepted = statuses.count(422)
    refused = statuses.count(507)
    assert accepted + refused == 10, statuses
    assert 1 <= accepted <= (320 * MiB - floor) // size, statuses
    assert lowest[0] >= floor - 2 * MiB, (lowest[0] // MiB, statuses)  # slack: the db, dirs
    assert client.app[SERVICES].disk.reserved == 0
