"""`make install` / `make uninstall` (systemd/install.mk) into a DESTDIR: the layout, a
config that is never overwritten, and an uninstall that keeps the config and the data."""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAKE = shutil.which("make")
pytestmark = pytest.mark.skipif(MAKE is None, reason="make is not installed")


def make(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    assert MAKE
    return subprocess.run(
        [MAKE, "--no-print-directory", "-f", "systemd/install.mk", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_install_and_uninstall_into_destdir(tmp_path):
    dest = tmp_path / "root"
    # VIDD_LOCK empty: tests/ already run with the dependencies; this checks the layout. (pip
    # still fetches setuptools for the isolated build; the venv's own lacks bdist_wheel.)
    args = [f"DESTDIR={dest}", f"PYTHON={sys.executable}", "VIDD_LOCK="]
    r = make("install", *args)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "systemctl enable --now vidd" in r.stdout
    assert "not creating the vidd user" in r.stdout
    assert "useradd" not in r.stdout and "daemon-reload" not in r.stdout

    vidd = dest / "opt/vidd/bin/vidd"
    assert vidd.is_file() and vidd.stat().st_mode & stat.S_IXUSR
    unit = dest / "etc/systemd/system/vidd.service"
    assert unit.read_text() == (ROOT / "systemd/vidd.service").read_text()

    config = dest / "etc/vidd/config.toml"
    assert stat.S_IMODE(config.stat().st_mode) == 0o640  # it may hold web.token
    shipped = (ROOT / "config.toml").read_text().splitlines()
    installed = config.read_text().splitlines()
    changed = [(a, b) for a, b in zip(shipped, installed, strict=True) if a != b]
    assert len(changed) == 1 and changed[0][1] == 'data_dir = "/var/lib/vidd"', changed

    # The installed command runs, and accepts the installed config.
    r = subprocess.run(
        [str(vidd), "check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{config}: ok"

    # pip put the page's files where an installed vidd looks for them (vidd.web.app).
    static = dest / "opt/vidd/share/vidd/static"
    assert (static / "index.html").is_file() and (static / "app.js").is_file()

    # A second install (an upgrade) keeps the operator's edits.
    config.write_text(config.read_text() + "\n# edited by the operator\n")
    r = make("install", *args)
    assert r.returncode == 0, r.stderr
    assert "kept the existing" in r.stdout
    assert config.read_text().endswith("# edited by the operator\n")

    data = dest / "var/lib/vidd"
    data.mkdir(parents=True)
    (data / "vidd.db").write_bytes(b"jobs")
    r = make("uninstall", f"DESTDIR={dest}")
    assert r.returncode == 0, r.stderr
    assert not (dest / "opt/vidd").exists()
    assert not unit.exists()
    assert config.read_text().endswith("# edited by the operator\n")
    assert (data / "vidd.db").read_bytes() == b"jobs"
    assert "Kept" in r.stdout


def test_real_install_creates_the_user_first():
    """Without DESTDIR the recipe creates the system user (a dry run: nothing is executed)."""
    r = make("-n", "install", "DESTDIR=")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.replace("\\\n", " ").splitlines()
    useradd = next(line for line in lines if "useradd" in line)
    assert useradd.startswith("id -u vidd")  # only when missing
    for part in ("--system", "--home-dir /var/lib/vidd", "--shell /usr/sbin/nologin", " vidd"):
        assert part in useradd
    assert lines.index(useradd) < next(i for i, x in enumerate(lines) if "-m venv" in x)
    assert "chgrp vidd" in r.stdout
    r = make("-n", "uninstall", "DESTDIR=")
    assert r.returncode == 0
    removals = [x for x in r.stdout.splitlines() if x.startswith("rm ")]
    assert removals == ["rm -f /etc/systemd/system/vidd.service", "rm -rf /opt/vidd"]
    assert "userdel" not in r.stdout


def test_top_level_makefile_includes_it():
    assert MAKE
    r = subprocess.run(
        [MAKE, "--no-print-directory", "-n", "install", "DESTDIR=/nonexistent/stage"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    assert "-m venv /nonexistent/stage/opt/vidd" in r.stdout


def test_the_real_install_takes_pinned_hashed_dependencies_and_a_closed_config():
    r = make("-n", "install", "DESTDIR=")
    assert r.returncode == 0, r.stderr
    text = r.stdout.replace("\\\n", " ")
    assert "--require-hashes --no-deps -r " + str(ROOT / "systemd" / "requirements.lock") in text
    lines = text.splitlines()
    config = next(line for line in lines if "config.toml.new" in line and "install -m" in line)
    # the file is 0640 before the first byte of config (and so of a token) is written
    assert config.index("install -m 0640 /dev/null") < config.index("sed -E")


def test_the_lock_file_pins_every_runtime_dependency_with_hashes():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {re.split(r"[<>=!~ ]", dep, maxsplit=1)[0].lower() for dep in project["dependencies"]}
    lock = (ROOT / "systemd" / "requirements.lock").read_text()
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==([^ \\]+)", lock, re.MULTILINE))
    assert wanted <= {name.lower() for name in pins}, (wanted, pins)
    for block in re.split(r"\n(?=[A-Za-z])", lock.split("\n", 3)[-1]):
        if "==" in block:
            assert "--hash=sha256:" in block, block
    floor = next(d for d in project["dependencies"] if d.startswith("aiohttp"))
    assert floor == "aiohttp>=3.12.14"
    major, minor, patch = (int(x) for x in pins["aiohttp"].split("."))
    assert (major, minor, patch) >= (3, 12, 14)
