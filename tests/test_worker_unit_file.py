"""systemd/vidd-worker.service: systemd's own checks (verify, security) and its promises:
the broker's password only in the environment file, its own user and work folder, a stop
that hands the encode back in time."""

from __future__ import annotations

import asyncio
import re
import sys

import pytest

from testkit.celery_worker import WorkerProcess, send
from testkit.fake_front import FakeFront
from testkit.media import make_clip
from testkit.redis import RedisServer
from testkit.systemd_units import (
    MDWE_UNSUPPORTED,
    MDWE_WRAPPER,
    ROOT,
    analyze,
    copy_for_verify,
    directives,
    needs_analyze,
    unexplained_hardening,
)
from vidd import worker, worker_cli, worker_process

UNIT = ROOT / "systemd" / "vidd-worker.service"


@needs_analyze
def test_verify_is_silent(tmp_path):
    # verify wants ExecStart's binary to exist: /opt/vidd/bin/vidd exists only once installed.
    text = UNIT.read_text()
    assert "ExecStart=/opt/vidd/bin/vidd worker\n" in text
    copy = copy_for_verify(UNIT, tmp_path)
    r = analyze("verify", copy.name, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stdout + r.stderr


@needs_analyze
def test_security_exposure_at_most_2():
    r = analyze("security", "--offline=true", "--no-pager", str(UNIT))
    assert r.returncode == 0, r.stderr
    last = r.stdout.strip().splitlines()[-1]
    m = re.search(r"exposure level for vidd-worker\.service: (\d+\.\d+)", last)
    assert m and float(m.group(1)) <= 2.0, r.stdout


def test_unit_keeps_its_promises():
    d = directives(UNIT.read_text())
    one = {k: v[-1] for k, v in d.items()}
    # The password: from a root-only environment file, never on the command line.
    assert one["EnvironmentFile"] == "/etc/vidd/worker.env"
    assert "--broker" not in one["ExecStart"] and "redis://" not in one["ExecStart"]
    # Its own user and work folder ($STATE_DIRECTORY, the worker's default --work-dir).
    assert one["User"] == one["Group"] == "vidd-worker"
    assert one["StateDirectory"] == "vidd-worker" and one["DynamicUser"] == "yes"
    assert "--work-dir" not in one["ExecStart"]
    # A usage or set-up error is not restarted in a loop.
    assert one["Restart"] == "on-failure"
    assert one["RestartPreventExitStatus"] == str(worker_cli.USAGE) == str(worker_cli.NO_EXTRA)
    # SIGTERM to the main process, which cancels the encode and hands the task back in
    # less than TimeoutStopSec.
    assert one["KillMode"] == "mixed"
    assert float(one["TimeoutStopSec"]) > worker_process.SOFT_SHUTDOWN_S + worker.KILL_GRACE_S + 5
    # Every hardening line carries a comment right above it (or above its pair).
    assert unexplained_hardening(UNIT.read_text()) == []


async def test_the_worker_encodes_without_write_execute_memory(tmp_path):
    """MemoryDenyWriteExecute=yes: under the kernel's own switch (PR_SET_MDWE, inherited
    across fork and exec) Celery's prefork pool, aiohttp and HandBrake still do a job."""
    wrapper = tmp_path / "mdwe.py"
    wrapper.write_text(MDWE_WRAPPER)
    broker = RedisServer(tmp_path / "redis").start()
    front = await FakeFront().start()
    worker = WorkerProcess(broker.url, tmp_path / "w", wrapper=(sys.executable, str(wrapper)))
    try:
        clip = make_clip(tmp_path / "clip.avi", seconds=1)
        attempt = front.add("jobm", clip, ["-e", "x264", "-q", "22", "-r", "15", "-B", "96"])
        worker.start()
        await asyncio.to_thread(send, broker.url, attempt.kwargs(front.url), attempt.id)
        for _ in range(600):
            if attempt.output is not None or worker.proc.poll() is not None:
                break
            await asyncio.sleep(0.1)
        if worker.proc.poll() == MDWE_UNSUPPORTED:
            pytest.skip("this kernel has no PR_SET_MDWE (Linux < 6.3)")
        assert attempt.output is not None and attempt.failures == [], worker.log()
    finally:
        worker.stop()
        await front.stop()
        broker.kill()
