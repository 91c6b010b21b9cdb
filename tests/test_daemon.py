"""The daemon's lifecycle rules that a user meets directly."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from testkit.daemon import Daemon, free_port, get_json, run_vidd, wait_for, write_config


def test_a_second_vidd_on_the_same_data_is_refused(
    daemon_factory: Callable[..., Daemon], tmp_path
) -> None:
    first = daemon_factory()
    other = tmp_path / "other"
    other.mkdir()
    config = write_config(other, storage={"data_dir": str(first.data)}, web={"port": free_port()})
    result = run_vidd("serve", "--config", str(config))
    assert result.returncode == 2  # the operator's to fix, like a config error
    assert "another vidd is already using" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert first.proc.poll() is None  # the first one is untouched


def serve(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vidd", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_corrupt_database_is_one_line_and_exit_2(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "vidd.db").write_bytes(b"this is not SQLite at all" * 100)
    result = serve(config)
    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    assert "is not a usable database" in out and "move it aside" in out
    assert "Traceback" not in out


def test_a_truncated_database_is_one_line_and_exit_2(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    db = tmp_path / "var" / "vidd.db"
    db.parent.mkdir()
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE filler (x)")
    conn.executemany("INSERT INTO filler VALUES (?)", [("x" * 1000,)] * 200)
    conn.commit()
    conn.close()
    with open(db, "r+b") as f:
        f.truncate(db.stat().st_size // 3)
        f.seek(100)
        f.write(b"\xff" * 4000)  # a torn page in the middle
    result = serve(config)
    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    assert "Traceback" not in out and "vidd.db" in out


def test_a_port_in_use_is_exit_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = write_config(tmp_path, web={"port": taken.getsockname()[1]})
        result = serve(config)
    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    assert "cannot listen on" in out and "Traceback" not in out


def test_sighup_is_logged_and_harmless(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory()
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "received SIGHUP" in d.log(), 10)
    assert d.proc.poll() is None
    assert get_json(d.url + "/api/status")["version"]
    assert d.stop() == 0


def test_a_read_only_data_folder_is_one_line_and_exit_2(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("remounting a tmpfs read-only needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)]).returncode:
        pytest.skip("this machine does not let us mount a tmpfs")
    try:
        config = write_config(tmp_path, storage={"data_dir": str(disk / "var")})
        (disk / "var").mkdir()
        sqlite3.connect(disk / "var" / "vidd.db").close()
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        result = serve(config)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    assert "cannot start" in out and "Traceback" not in out
    assert len([line for line in out.splitlines() if "ERROR" in line]) == 1, out


def test_a_token_readable_by_everyone_is_warned_about(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    token = "ab" * 32
    write_config(tmp_path, web={"token": token})
    (tmp_path / "config.toml").chmod(0o644)
    d = daemon_factory()
    assert "holds web.token and every user can read it (mode 644)" in d.log()
    assert token not in d.log()
    d.stop()
    (tmp_path / "config.toml").chmod(0o640)
    d = daemon_factory()
    assert "every user can read it" not in d.log()
