"""Faults injected for real into a running vidd: a database another process holds locked,
a data disk that fills up, HandBrakeCLI taken away. Nothing is lost, no job is left in
a state no one works on, and /healthz says what is wrong."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.daemon import get_json, wait_for
from testkit.jobs import make_job
from testkit.media import ffprobe, make_clip
from testkit.tmpfs import tiny_disk
from vidd.store import Store

LOCK_S = 15.0  # past the busy_timeout (5 s) of a queued progress write and of the end itself


def upload(url: str, path: Path) -> dict:
    """POST a file as multipart; returns the JSON answer (any status)."""
    boundary = "vidd-test-boundary"
    body = (
        (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + path.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    req = urllib.request.Request(
        url + "/api/jobs",
        data=body,
        method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        return json.loads(e.read())


def healthz(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@contextlib.contextmanager
def locked(db: Path, seconds: float) -> Iterator[threading.Event]:
    """Another process's view: a connection that holds the write lock for `seconds`."""
    taken = threading.Event()

    def hold() -> None:
        conn = sqlite3.connect(db, timeout=30, isolation_level=None)
        try:
            conn.execute("BEGIN EXCLUSIVE")
            taken.set()
            time.sleep(seconds)
            conn.execute("ROLLBACK")
        finally:
            conn.close()

    t = threading.Thread(target=hold)
    t.start()
    assert taken.wait(30), "could not take the lock"
    try:
        yield taken
    finally:
        t.join()


@pytest.fixture(scope="module")
def clip_10s(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Long enough that an encode is still running when the lock is taken."""
    return make_clip(tmp_path_factory.mktemp("faults") / "ten.avi", seconds=10)


@pytest.mark.timeout(120)
def test_a_locked_database_delays_a_jobs_end_but_loses_nothing(daemon_factory, clip_10s):
    d = daemon_factory(encode={"max_parallel": 1})
    job = upload(d.url, clip_10s)
    wait_for(lambda: get_json(f"{d.url}/api/jobs/{job['id']}")["status"] == "running", 30)
    with locked(d.data / "vidd.db", LOCK_S):
        # The encode ends while the lock is held: its end can't be written yet.
        wait_for(lambda: (d.data / "videos" / f"{job['id']}.mp4").exists(), 30)
        seen = get_json(f"{d.url}/api/jobs/{job['id']}")  # reads still work in WAL mode
        assert seen["status"] == "running"  # the pool still holds it: someone works on it
        status, body = healthz(d.url)
        assert status == 503 and "database" in body["error"]["message"], body
        assert get_json(f"{d.url}/api/status")["workers"]["busy"] == 1
    done = wait_for(
        lambda: (j := get_json(f"{d.url}/api/jobs/{job['id']}"))["status"] != "running" and j,
        30,
    )
    assert done["status"] == "done", done
    out = d.data / "videos" / f"{job['id']}.mp4"
    assert out.stat().st_size == done["output"]["size"]  # the output was kept meanwhile
    streams = {s["codec_type"]: s["codec_name"] for s in ffprobe(out)["streams"]}
    assert streams == {"video": "h264", "audio": "aac"}
    assert "Traceback" not in d.log()
    wait_for(lambda: healthz(d.url)[0] == 200, 10)


def test_healthz_and_status_name_a_missing_handbrake(daemon_factory, tmp_path):
    tool = tmp_path / "bin" / "HandBrakeCLI"  # the fake in its "ok" mode: the real one
    tool.parent.mkdir()
    shutil.copy(Path(__file__).parent / "fake_handbrake.py", tool)
    d = daemon_factory(encode={"handbrake": str(tool)})
    assert healthz(d.url)[0] == 200
    assert get_json(f"{d.url}/api/status")["health"] == {"ok": True, "problems": []}
    tool.unlink()
    status, body = healthz(d.url)
    assert status == 503 and "HandBrakeCLI" in body["error"]["message"], body
    assert "Traceback" not in body["error"]["message"]
    health = wait_for(lambda: (h := get_json(f"{d.url}/api/status")["health"])["problems"] and h)
    assert health["ok"] is False and any("HandBrakeCLI" in p for p in health["problems"])


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs for the data folder (root only)."""
    with tiny_disk(tmp_path / "disk", "64m") as disk:
        yield disk


def fill(disk: Path, leave: int) -> Path:
    """A ballast file that leaves `leave` bytes free on `disk`."""
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    ballast = disk / "ballast"
    with open(ballast, "wb") as f:
        os.posix_fallocate(f.fileno(), 0, max(0, free - leave))
    return ballast


@pytest.mark.timeout(120)
def test_the_disk_guard_pauses_intake_and_encodes_then_resumes(daemon_factory, small_disk, clip):
    mib = 1 << 20
    d = daemon_factory(
        storage={"data_dir": str(small_disk / "var"), "min_free_bytes": 16 * mib},
        watch={"stable_seconds": 1.0},
    )
    ballast = fill(small_disk, 8 * mib)  # below the guard's 16 MiB
    shutil.copyfile(clip, d.inbox / ".incoming")
    os.rename(d.inbox / ".incoming", d.inbox / "waits.avi")
    trouble = wait_for(lambda: get_json(f"{d.url}/api/status")["inbox_troubles"], 20)
    assert trouble[0]["name"] == "waits.avi" and "MiB free" in trouble[0]["reason"]
    assert (d.inbox / "waits.avi").exists()  # left where it was, not lost
    status = get_json(f"{d.url}/api/status")
    assert status["jobs"]["queued"] == 0 and status["jobs"]["admitting"] == 0
    ballast.unlink()  # space is back: the file is taken by itself and converted
    job = wait_for(
        lambda: [j for j in get_json(f"{d.url}/api/jobs")["jobs"] if j["status"] == "done"], 60
    )[0]
    assert job["name"] == "waits.avi"
    assert not (d.inbox / "waits.avi").exists()
    assert "could not admit waits.avi" in d.log()


def queue_a_job(data: Path, clip: Path) -> str:
    """A queued job already in the store when vidd starts (as after a restart)."""
    job = make_job(name="queued.avi")
    (data / "sources").mkdir(parents=True)
    shutil.copyfile(clip, data / "sources" / f"{job.id}.avi")

    async def add() -> None:
        async with Store(data / "vidd.db") as store:
            await store.add(job)

    asyncio.run(add())
    return job.id


@pytest.mark.timeout(120)
def test_new_encodes_wait_while_the_disk_is_short(daemon_factory, small_disk, clip):
    mib = 1 << 20
    data = small_disk / "var"
    job_id = queue_a_job(data, clip)
    ballast = fill(small_disk, 8 * mib)  # below the guard's 16 MiB
    d = daemon_factory(
        storage={"data_dir": str(data), "min_free_bytes": 16 * mib}, watch={"enabled": False}
    )
    paused = wait_for(lambda: get_json(f"{d.url}/api/status")["paused"], 10)
    assert "MiB free" in paused
    time.sleep(1.0)
    assert get_json(f"{d.url}/api/jobs/{job_id}")["status"] == "queued"  # waits, not failed
    assert upload(d.url, clip)["error"]["code"] == "disk_full"  # uploads are refused meanwhile
    ballast.unlink()  # space is back: the encode starts by itself
    wait_for(lambda: get_json(f"{d.url}/api/jobs/{job_id}")["status"] == "done", 60)
    assert get_json(f"{d.url}/api/status")["paused"] is None
    assert "new encodes paused" in d.log() and "encodes resume" in d.log()
