"""systemd/vidd.service: systemd's own checks (verify, security) and what the hardening
promises (HandBrakeCLI still encodes without writable+executable memory)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

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

UNIT = ROOT / "systemd" / "vidd.service"


@needs_analyze
def test_verify_is_silent(tmp_path):
    text = UNIT.read_text()
    assert "ExecStart=/opt/vidd/bin/vidd serve --config /etc/vidd/config.toml\n" in text
    copy = copy_for_verify(UNIT, tmp_path)
    r = analyze("verify", copy.name, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and r.stderr == "", r.stdout + r.stderr


@needs_analyze
def test_security_exposure_at_most_2(tmp_path):
    # --offline reads the file itself; no running systemd is needed.
    r = analyze("security", "--offline=true", "--no-pager", str(UNIT))
    assert r.returncode == 0, r.stderr
    last = r.stdout.strip().splitlines()[-1]
    m = re.search(r"exposure level for vidd\.service: (\d+\.\d+)", last)
    assert m, last
    assert float(m.group(1)) <= 2.0, r.stdout


def test_unit_keeps_its_promises():
    d = directives(UNIT.read_text())
    one = {k: v[-1] for k, v in d.items()}
    assert one["Type"] == "notify"
    assert one["NotifyAccess"] == "main"
    assert one["KillMode"] == "mixed"
    assert one["User"] == one["Group"] == "vidd"
    # The stop timeout must outlast the daemon's own shutdown deadline (config.toml default).
    import tomllib

    shipped = tomllib.loads((ROOT / "config.toml").read_text())
    shutdown = float(shipped.get("daemon", {}).get("shutdown_timeout_s", 30))
    grace = float(shipped.get("encode", {}).get("kill_grace_s", 5))
    assert float(one["TimeoutStopSec"]) > shutdown + grace
    # The pool renices queued encodes: @resources (setpriority) stays allowed...
    assert "~@resources" not in " ".join(d["SystemCallFilter"])
    assert "@system-service" in d["SystemCallFilter"]
    # ...and RLIMIT_NICE lets vidd raise a child back to nice 0 (a '+' means a nice value).
    assert one["LimitNICE"] == "+0"
    # Every hardening line carries a comment: right above it, or above its pair.
    assert unexplained_hardening(UNIT.read_text()) == []


def test_handbrake_encodes_without_write_execute_memory(tmp_path, clip):
    """MemoryDenyWriteExecute=yes: the kernel's own switch (PR_SET_MDWE, Linux 6.3+, inherited
    across exec) refuses the same mappings; x264 must still encode under it."""
    wrapper = tmp_path / "mdwe.py"
    wrapper.write_text(MDWE_WRAPPER)
    handbrake = shutil.which("HandBrakeCLI")
    assert handbrake
    out = tmp_path / "out.mp4"
    args = [sys.executable, str(wrapper), handbrake, "-i", str(clip), "-o", str(out)]
    args += ["-e", "x264", "-q", "22", "-r", "15", "-B", "96", "-O"]
    r = subprocess.run(args, capture_output=True, timeout=90)
    if r.returncode == MDWE_UNSUPPORTED:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux < 6.3)")
    assert r.returncode == 0, r.stderr[-2000:]
    assert out.stat().st_size > 1000
    # The switch really was on: Python under it cannot map W+X memory.
    probe = (
        "import mmap\n"
        "try:\n"
        "    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
        "except PermissionError:\n"
        "    print('refused')\n"
    )
    r = subprocess.run(
        [sys.executable, str(wrapper), sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.stdout.strip() == "refused"
