"""The box HandBrakeCLI and ffmpeg run in, set up inside the child just before it execs
the tool: they parse untrusted media, so they get as little as they need.

    python -I -S sandbox.py [--read PATH]... [--write DIR]... -- TOOL ARGS...

- dies with vidd (PR_SET_PDEATHSIG), and can never gain privileges (no_new_privs);
- no capabilities: ambient ones cleared, the bounding set emptied where allowed;
- no network: a network namespace of its own where the kernel lets us make one;
- files: with Landlock, only the system's own folders (read), the paths given with
  --read, and the folders given with --write. Not the config, not other jobs' files.

Standard library only, run with -S: it starts in a few milliseconds.
"""

from __future__ import annotations

import ctypes
import os
import signal
import struct
import sys
from typing import Any

PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
CLONE_NEWNET = 0x40000000
LAST_CAP = 63

# Landlock: the same syscall numbers on every architecture.
SYS_CREATE_RULESET, SYS_ADD_RULE, SYS_RESTRICT_SELF = 444, 445, 446
CREATE_RULESET_VERSION = 1
RULE_PATH_BENEATH = 1
EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
DIR_WRITES = sum(1 << i for i in range(4, 13))  # remove and make files, dirs, links...
REFER, TRUNCATE = 1 << 13, 1 << 14  # ABI 2, ABI 3
FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE
READ = EXECUTE | READ_FILE | READ_DIR

# What any dynamically linked tool reads. /etc as a whole is not here: the config is.
SYSTEM_READS = (
    "/usr",
    "/lib",
    "/lib64",
    "/lib32",
    "/bin",
    "/sbin",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/fonts",
    "/var/cache/fontconfig",
    "/proc/self",
    "/proc/cpuinfo",
    "/proc/meminfo",
    "/proc/stat",
    "/sys/devices/system/cpu",
    "/dev/urandom",
    "/dev/random",
)
SYSTEM_WRITES = ("/dev/null",)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _prctl(libc: ctypes.CDLL, *args: int) -> bool:
    return int(libc.prctl(*(ctypes.c_ulong(a) for a in args))) == 0


def drop_privileges(libc: ctypes.CDLL) -> None:
    _prctl(libc, PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # vidd is already gone
        os._exit(1)
    if libc.unshare(CLONE_NEWNET) != 0:
        pass  # not allowed here (no CAP_SYS_ADMIN): the unit's IPAddressDeny stands in
    _prctl(libc, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    for cap in range(LAST_CAP + 1):  # needs CAP_SETPCAP; without it there is none to drop
        _prctl(libc, PR_CAPBSET_DROP, cap)
    if not _prctl(libc, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0):
        raise OSError(ctypes.get_errno(), "no_new_privs")


def confine_files(libc: ctypes.CDLL, reads: list[str], writes: list[str]) -> bool:
    """Landlock: only these paths from now on. False where the kernel has no Landlock."""
    syscall = libc.syscall
    syscall.restype = ctypes.c_long
    abi = syscall(SYS_CREATE_RULESET, None, ctypes.c_size_t(0), CREATE_RULESET_VERSION)
    if abi < 1:
        return False
    handled = EXECUTE | WRITE_FILE | READ_FILE | READ_DIR | DIR_WRITES
    handled |= (REFER if abi >= 2 else 0) | (TRUNCATE if abi >= 3 else 0)
    attr = struct.pack("=Q", handled)
    ruleset = syscall(SYS_CREATE_RULESET, attr, ctypes.c_size_t(len(attr)), 0)
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset")
    try:
        for path in (*SYSTEM_READS, *reads):
            _allow(syscall, ruleset, path, READ & handled)
        for path in (*SYSTEM_WRITES, *writes):
            _allow(syscall, ruleset, path, handled)
        if syscall(SYS_RESTRICT_SELF, ruleset, 0) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self")
    finally:
        os.close(ruleset)
    return True


def _allow(syscall: Any, ruleset: int, path: str, access: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return  # not on this system
    try:
        if not os.path.isdir(path):
            access &= FILE_RIGHTS  # a file takes only file rights
        rule = struct.pack("=Qi", access, fd)
        if syscall(SYS_ADD_RULE, ruleset, RULE_PATH_BENEATH, rule, 0) != 0:
            raise OSError(ctypes.get_errno(), f"landlock_add_rule {path}")
    finally:
        os.close(fd)


def main(argv: list[str]) -> None:
    reads: list[str] = []
    writes: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == "--":
            break
        if arg in ("--read", "--write"):
            (reads if arg == "--read" else writes).append(next(args))
        else:
            raise SystemExit(f"vidd sandbox: unknown option {arg!r}")
    command = list(args)
    if not command:
        raise SystemExit("vidd sandbox: no command")
    libc = _libc()
    drop_privileges(libc)
    tool = command[0]
    if os.sep in tool:
        reads.append(tool)  # a tool outside the system folders may still run
    if not confine_files(libc, reads, writes):
        print("vidd sandbox: this kernel has no Landlock; files are not confined", file=sys.stderr)
    try:
        os.execvp(tool, command)
    except OSError as e:
        print(f"vidd sandbox: cannot run {tool}: {e.strerror}", file=sys.stderr)
        os._exit(127)


if __name__ == "__main__":
    main(sys.argv[1:])
