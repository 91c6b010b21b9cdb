"""systemd/vidd.service: systemd's own checks (verify, security) and what the hardening
promises (HandBrakeCLI still encodes without writable+executable memory)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "vidd.service"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed (`make test` installs systemd)"
)


def directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def unit_copy_for_verify(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at an executable that exists here.

    verify checks that ExecStart's binary exists, and /opt/vidd/bin/vidd only exists after
    `make install`; the shipped file stays as it is.
    """
    text = UNIT.read_text()
    assert "ExecStart=/opt/vidd/bin/vidd serve --config /etc/vidd/config.toml\n" in text
    true = shutil.which("true") or "/bin/true"
    copy = tmp_path / "vidd.service"
    copy.write_text(text.replace("ExecStart=/opt/vidd/bin/vidd", f"ExecStart={true}"))
    return copy


@needs_analyze
def test_verify_is_silent(tmp_path):
    copy = unit_copy_for_verify(tmp_path)
    r = subprocess.run(
        [ANALYZE, "verify", copy.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and r.stderr == "", r.stdout + r.stderr


@needs_analyze
def test_security_exposure_at_most_2(tmp_path):
    # --offline reads the file itself; no running systemd is needed.
    r = subprocess.run(
        [ANALYZE, "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
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
    # Every hardening line carries a comment: right above it, or above its pair
    # (IPAddressDeny/IPAddressAllow).
    lines = UNIT.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# --- Hardening"))
    end = lines.index("[Install]")
    for i in range(start + 1, end):
        if lines[i] and not lines[i].startswith("#"):
            j = i - 1
            while lines[j] and not lines[j].startswith("#"):
                j -= 1
            assert lines[j].startswith("#") and i - j <= 2, lines[i]


MDWE_WRAPPER = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
    sys.exit(77)
os.execv(sys.argv[1], sys.argv[1:])
"""


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
    if r.returncode == 77:
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
