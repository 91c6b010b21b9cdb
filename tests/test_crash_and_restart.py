"""vidd stopped or killed at the worst moment loses nothing: jobs resume and tmp/ is clean."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from testkit.daemon import Daemon, get_json, start_daemon, wait_for
from testkit.media import make_clip


@pytest.fixture(scope="session")
def long_clip(clip_dir: Path) -> Path:
    """About 4 s of encoding here: long enough to interrupt mid-encode."""
    return make_clip(clip_dir / "long-640.avi", seconds=30, size="640x480")


def the_job(d: Daemon) -> dict[str, Any]:
    [job] = get_json(d.url + "/api/jobs")["jobs"]
    return dict(job)


def running_with_progress(d: Daemon) -> bool:
    job = the_job(d) if get_json(d.url + "/api/jobs")["jobs"] else None
    return bool(job and job["status"] == "running" and job["progress"] > 0.05)


def handbrake_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"HandBrakeCLI"):
                pids.append(int(entry.name))
    return pids


def test_kill_9_mid_encode_then_restart_completes(
    daemon_factory: Callable[..., Daemon], long_clip: Path
) -> None:
    d = daemon_factory()
    shutil.copyfile(long_clip, d.data / "tmp-drop.avi")
    (d.data / "tmp-drop.avi").rename(d.inbox / "long.avi")
    wait_for(lambda: running_with_progress(d), timeout=60, interval=0.05)
    before = set(handbrake_pids())
    assert before, "HandBrakeCLI should be encoding"
    d.proc.kill()  # SIGKILL: no clean-up of any kind
    d.proc.wait()
    # the orphaned encode dies with its parent instead of burning the CPU
    wait_for(lambda: not (set(handbrake_pids()) & before), timeout=10)

    again = start_daemon(d.config_path)
    try:
        job = wait_for(
            lambda: (j := the_job(again))["status"] in ("done", "failed") and j, timeout=90
        )
        assert job["status"] == "done", job
        # its poster follows the done record (made in tmp/, then renamed into videos/)
        wait_for(lambda: the_job(again)["output"]["poster_url"], timeout=30)
        assert list((again.data / "tmp").iterdir()) == []
        assert (again.data / "videos" / f"{job['id']}.mp4").stat().st_size > 0
    finally:
        again.stop()


def test_sigterm_waits_then_requeues_and_exits_0(
    daemon_factory: Callable[..., Daemon], long_clip: Path
) -> None:
    d = daemon_factory(daemon={"shutdown_timeout_s": 0.5})
    shutil.copyfile(long_clip, d.data / "tmp-drop.avi")
    (d.data / "tmp-drop.avi").rename(d.inbox / "long.avi")
    wait_for(lambda: running_with_progress(d), timeout=60, interval=0.05)
    started = time.monotonic()
    assert d.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 15
    assert "back to the queue" in d.log()
    assert list((d.data / "tmp").iterdir()) == []

    again = start_daemon(d.config_path)
    try:
        job = wait_for(lambda: (j := the_job(again))["status"] == "done" and j, timeout=90)
        assert job["output"]["size"] > 0
    finally:
        again.stop()


def test_a_second_sigint_exits_at_once(
    daemon_factory: Callable[..., Daemon], long_clip: Path
) -> None:
    d = daemon_factory(daemon={"shutdown_timeout_s": 60.0})
    shutil.copyfile(long_clip, d.data / "tmp-drop.avi")
    (d.data / "tmp-drop.avi").rename(d.inbox / "long.avi")
    wait_for(lambda: running_with_progress(d), timeout=60, interval=0.05)
    pids = set(handbrake_pids())
    os.kill(d.proc.pid, signal.SIGINT)  # the first waits up to 60 s for the encode...
    time.sleep(0.3)
    started = time.monotonic()
    os.kill(d.proc.pid, signal.SIGINT)  # ...the second does not
    d.proc.wait(10)
    assert time.monotonic() - started < 5
    assert d.proc.returncode != 0
    wait_for(lambda: not (set(handbrake_pids()) & pids), timeout=10)


def test_the_api_still_answers_while_encodes_drain(
    daemon_factory: Callable[..., Daemon], long_clip: Path
) -> None:
    d = daemon_factory(daemon={"shutdown_timeout_s": 3.0})
    shutil.copyfile(long_clip, d.data / "tmp-drop.avi")
    (d.data / "tmp-drop.avi").rename(d.inbox / "long.avi")
    wait_for(lambda: running_with_progress(d), timeout=60, interval=0.05)
    d.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert the_job(d)["status"] == "running"  # the page can watch the drain
    assert d.proc.wait(30) == 0
