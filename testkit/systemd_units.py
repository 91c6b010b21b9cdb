"""What the tests of vidd's systemd units share: a unit's directives, the check that
every hardening line is explained, and the wrapper that runs a command under the
kernel's no-write+execute switch (what MemoryDenyWriteExecute=yes enforces)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed (`make test` installs systemd)"
)

MDWE_UNSUPPORTED = 77  # the wrapper's exit code on a kernel without PR_SET_MDWE (< 6.3)

# python MDWE_WRAPPER COMMAND ARGS...: exec COMMAND with PR_SET_MDWE set (inherited
# across fork and exec), or exit MDWE_UNSUPPORTED.
MDWE_WRAPPER = f"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
    sys.exit({MDWE_UNSUPPORTED})
os.execv(sys.argv[1], sys.argv[1:])
"""


def directives(text: str) -> dict[str, list[str]]:
    """Each key's values, in order (a later one overrides, or adds to a list)."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def unexplained_hardening(text: str) -> list[str]:
    """The lines after `# --- Hardening` (up to [Install]) without a comment right above
    them or above their pair (IPAddressDeny/IPAddressAllow)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# --- Hardening"))
    end = lines.index("[Install]")
    bare = []
    for i in range(start + 1, end):
        if lines[i] and not lines[i].startswith("#"):
            j = i - 1
            while lines[j] and not lines[j].startswith("#"):
                j -= 1
            if not (lines[j].startswith("#") and i - j <= 2):
                bare.append(lines[i])
    return bare


def analyze(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze ARGS` (text, captured); skip with needs_analyze where it is missing."""
    assert ANALYZE is not None
    return subprocess.run([ANALYZE, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def copy_for_verify(unit: Path, folder: Path) -> Path:
    """The unit with ExecStart's /opt/vidd/bin/vidd (there only after `make install`)
    pointing at an executable that exists here: verify checks that it does."""
    true = shutil.which("true") or "/bin/true"
    copy = folder / unit.name
    copy.write_text(unit.read_text().replace("ExecStart=/opt/vidd/bin/vidd", f"ExecStart={true}"))
    return copy
