"""vidd.notify against a real AF_UNIX datagram socket, and the daemon's notify protocol."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vidd.notify import Notifier

PRIVATE = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


@pytest.fixture
def sock(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket standing in for systemd's notify socket."""
    path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(5)
    yield s, path
    s.close()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key in PRIVATE:
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def drain(s: socket.socket) -> list[str]:
    """Every datagram waiting on `s`, without blocking."""
    out = []
    s.setblocking(False)
    try:
        while True:
            out.append(s.recv(4096).decode())
    except BlockingIOError:
        pass
    finally:
        s.settimeout(5)
    return out


def test_from_env_pops_the_variables(sock, clean_env):
    _, path = sock
    clean_env.setenv("NOTIFY_SOCKET", path)
    clean_env.setenv("WATCHDOG_USEC", "200000")
    clean_env.setenv("WATCHDOG_PID", str(os.getpid()))
    n = Notifier.from_env()
    for key in PRIVATE:
        assert key not in os.environ
    assert n.enabled
    assert n.watchdog_interval() == pytest.approx(0.1)


def test_ready_status_stopping_datagrams(sock, clean_env):
    s, path = sock
    clean_env.setenv("NOTIFY_SOCKET", path)
    n = Notifier.from_env()
    n.ready()
    n.status("1 running,\n2 queued")
    n.status("1 running, 2 queued")  # the same line again: not sent
    n.status("idle")
    n.stopping()
    assert [s.recv(4096).decode() for _ in range(4)] == [
        "READY=1",
        "STATUS=1 running, 2 queued",
        "STATUS=idle",
        "STOPPING=1",
    ]
    assert drain(s) == []
    n.close()


def test_abstract_socket(clean_env):
    name = f"vidd-test-{secrets.token_hex(6)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        s.settimeout(5)
        clean_env.setenv("NOTIFY_SOCKET", "@" + name)
        n = Notifier.from_env()
        n.ready()
        assert s.recv(4096) == b"READY=1"
        n.close()


def test_disabled_without_socket(clean_env):
    n = Notifier.from_env()
    assert not n.enabled
    assert n.watchdog_interval() is None
    n.ready()  # does nothing, raises nothing
    n.stopping()


def test_send_errors_are_not_fatal(tmp_path, clean_env, caplog):
    clean_env.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens.sock"))
    n = Notifier.from_env()
    n.ready()
    n.ready()
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1  # logged once, not on every ping
    assert "READY" in warnings[0].getMessage()
    n.close()


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("200000", "self", 0.1),
        ("30000000", "", 15.0),
        ("200000", "1", None),  # meant for another process
        ("0", "self", None),
        ("nonsense", "self", None),
    ],
)
def test_watchdog_interval(sock, clean_env, usec, pid, expected):
    _, path = sock
    clean_env.setenv("NOTIFY_SOCKET", path)
    clean_env.setenv("WATCHDOG_USEC", usec)
    if pid:
        clean_env.setenv("WATCHDOG_PID", str(os.getpid()) if pid == "self" else pid)
    assert Notifier.from_env().watchdog_interval() == (
        None if expected is None else pytest.approx(expected)
    )


async def test_watchdog_pings_at_the_interval(sock, clean_env):
    s, path = sock
    clean_env.setenv("NOTIFY_SOCKET", path)
    clean_env.setenv("WATCHDOG_USEC", "200000")
    clean_env.setenv("WATCHDOG_PID", str(os.getpid()))
    n = Notifier.from_env()
    s.setblocking(False)
    loop = asyncio.get_running_loop()
    calls = 0

    async def healthy() -> bool:
        nonlocal calls
        calls += 1
        return True

    task = asyncio.create_task(n.watchdog(healthy))
    times = []
    deadline = time.monotonic() + 0.65
    while time.monotonic() < deadline:
        try:
            data = await asyncio.wait_for(loop.sock_recv(s, 4096), deadline - time.monotonic())
        except TimeoutError:
            break
        assert data == b"WATCHDOG=1"
        times.append(time.monotonic())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # 0.65 s at one ping per 0.1 s (the first at once): 6 or 7, give or take a slow machine.
    assert 4 <= len(times) <= 8, times
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(0.05 < g < 0.25 for g in gaps), gaps
    assert calls >= len(times)
    n.close()


async def test_no_ping_while_unhealthy_or_slow(sock, clean_env):
    s, path = sock
    clean_env.setenv("NOTIFY_SOCKET", path)
    clean_env.setenv("WATCHDOG_USEC", "200000")
    n = Notifier.from_env()
    state = {"mode": "false"}

    async def healthy() -> bool:
        if state["mode"] == "slow":
            await asyncio.sleep(1)  # longer than the 0.1 s interval
        if state["mode"] == "raise":
            raise RuntimeError("database is locked")
        return state["mode"] == "true"

    task = asyncio.create_task(n.watchdog(healthy))
    for mode in ("false", "slow", "raise"):
        state["mode"] = mode
        await asyncio.sleep(0.35)
        assert drain(s) == [], mode
    state["mode"] = "true"
    await asyncio.sleep(0.35)
    assert drain(s).count("WATCHDOG=1") >= 2
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    n.close()


async def test_watchdog_without_watchdog_waits_for_cancel(sock, clean_env):
    _, path = sock
    clean_env.setenv("NOTIFY_SOCKET", path)
    n = Notifier.from_env()

    async def healthy() -> bool:
        raise AssertionError("never asked without a watchdog")

    task = asyncio.create_task(n.watchdog(healthy))
    await asyncio.sleep(0.05)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# -- the daemon speaks the protocol (needs vidd.daemon and vidd.web) --------------------------


def test_daemon_ready_status_stopping(daemon_factory, sock, clip):
    s, path = sock
    d = daemon_factory(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})
    # daemon_factory returns once /healthz answers; READY must already be there by then.
    messages = drain(s)
    assert "READY=1" in messages, messages
    (d.inbox / "clip.avi").write_bytes(clip.read_bytes())
    deadline = time.monotonic() + 60
    seen = list(messages)
    while time.monotonic() < deadline and not any(m.startswith("STATUS=") for m in seen):
        time.sleep(0.1)
        seen += drain(s)
    assert any(m.startswith("STATUS=") for m in seen), seen
    while time.monotonic() < deadline and "WATCHDOG=1" not in seen:
        time.sleep(0.1)
        seen += drain(s)
    assert "WATCHDOG=1" in seen
    assert d.stop() == 0
    assert "STOPPING=1" in drain(s)


def test_children_do_not_inherit_notify_socket(daemon_factory, sock, tmp_path, clip):
    """A HandBrakeCLI stand-in records its environment; NOTIFY_SOCKET must not be in it."""
    _, path = sock
    env_file = tmp_path / "child-env.txt"
    fake = tmp_path / "HandBrakeCLI"
    fake.write_text(f'#!/bin/sh\nenv > "{env_file}"\nexec /usr/bin/HandBrakeCLI "$@"\n')
    fake.chmod(0o755)
    d = daemon_factory(
        env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"},
        encode={"handbrake": str(fake)},
    )
    (d.inbox / "clip.avi").write_bytes(clip.read_bytes())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not env_file.exists():
        time.sleep(0.1)
    time.sleep(0.2)
    env = env_file.read_text()
    assert "PATH=" in env
    for key in PRIVATE:
        assert f"{key}=" not in env


# -- vidd.logs: journald or console lines (kept here, with the rest of the systemd contract) ---


def _run_logging(tmp_path: Path, journal: bool, extra_env: dict[str, str] | None = None) -> str:
    """Log from a real child process whose stderr is a file; JOURNAL_STREAM names that file
    (device:inode), as systemd does for the stream it connects to the journal."""
    import subprocess
    import sys

    out = tmp_path / "stderr.txt"
    out.write_bytes(b"")
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    if journal:
        st = os.stat(out)
        env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    env.update(extra_env or {})
    code = (
        "import logging\n"
        "from vidd import logs\n"
        "logs.setup('info')\n"
        "log = logging.getLogger('vidd.pool')\n"
        "log.debug('hidden')\n"
        "log.info('job %s started', 'abc')\n"
        "log.warning('name with\\nnewline')\n"
        "try:\n"
        "    1 / 0\n"
        "except ZeroDivisionError:\n"
        "    log.exception('boom')\n"
        "logs.setup('info', verbose=True)\n"
        "log.debug('now shown')\n"
    )
    with open(out, "ab") as f:
        subprocess.run([sys.executable, "-c", code], stderr=f, env=env, check=True, timeout=30)
    return out.read_text()


def test_logs_under_journald(tmp_path):
    lines = _run_logging(tmp_path, journal=True).splitlines()
    assert lines[0] == "<6>vidd.pool: job abc started"
    assert lines[1] == "<4>vidd.pool: name with\\nnewline"  # one event stays one line
    assert lines[2] == "<3>vidd.pool: boom"
    # The traceback lines carry the same priority, so journald files them as errors too.
    trace = [line for line in lines[3:] if not line.startswith("<7>")]
    assert trace and all(line.startswith("<3>") for line in trace)
    assert any("ZeroDivisionError" in line for line in trace)
    assert lines[-1] == "<7>vidd.pool: now shown"
    assert not any("hidden" in line for line in lines)


def test_logs_on_a_console(tmp_path):
    import re

    lines = _run_logging(tmp_path, journal=False).splitlines()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}"
    assert re.fullmatch(stamp + r" INFO +vidd\.pool: job abc started", lines[0]), lines[0]
    assert re.fullmatch(stamp + r" WARNING vidd\.pool: name with\\nnewline", lines[1]), lines[1]
    assert not any(line.startswith("<") for line in lines)
    assert "ZeroDivisionError: division by zero" in lines
    assert re.fullmatch(stamp + r" DEBUG +vidd\.pool: now shown", lines[-1])


def test_logs_ignore_a_journal_stream_that_is_not_ours(tmp_path):
    # A child of some service that redirected stderr to a file keeps the variable but not
    # the stream: no '<N>' prefixes then.
    text = _run_logging(tmp_path, journal=False, extra_env={"JOURNAL_STREAM": "8:12345"})
    assert "INFO    vidd.pool: job abc started" in text
    assert "<6>" not in text


def test_logs_setup_rejects_unknown_level():
    from vidd import logs

    with pytest.raises(ValueError, match="unknown log level"):
        logs.setup("loud")
