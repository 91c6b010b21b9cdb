"""Simulated hosts on one machine: a bridge in the root network namespace (the front and
Redis listen on its address) and one network namespace per worker host, joined to it by a
veth pair. A host's processes also run in a mount namespace of their own (`unshare
--mount`) where the front's folders are hidden under an empty tmpfs, so a worker provably
cannot read the front's files: everything it gets, it gets over HTTP.

Host death = SIGKILL to every process of the namespace (`ip netns pids`) and their
descendants (vidd's box gives HandBrakeCLI a network namespace of its own); partition = the
host's veth link down (and up again). Where namespaces are not allowed, LocalNetwork and
LocalHost stand in: plain process sessions on 127.0.0.1, no partition, nothing hidden.

Names and subnets are unique per process and per Network (the suite runs under `pytest -n
2`, perhaps beside another run), allocated under a file lock, and recorded with the
owner's pid so a run that died is cleaned up by the next.
Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN); `unavailable()` says why not, for a skip.

Run as a program it is the step that hides the folders inside a host's mount namespace:
    python netns.py hide DIR... -- COMMAND ARGS...
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import random
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Self

IP = "/usr/sbin/ip" if os.path.exists("/usr/sbin/ip") else "ip"
UNSHARE = "/usr/bin/unshare" if os.path.exists("/usr/bin/unshare") else "unshare"
MOUNT = "/usr/bin/mount" if os.path.exists("/usr/bin/mount") else "mount"
LOCK_PATH = Path("/tmp/vidd-netns.lock")
NS_PREFIX = "vidd-"  # namespaces: vidd-<owner pid>-<tag>-<host>
ALIAS_PREFIX = "vidd-e2e-owner:"  # a bridge's alias names its owner pid
SUBNETS = ipaddress.IPv4Network("10.200.0.0/13")  # 10.200.0.0 .. 10.207.255.255, /24 each


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=30, check=check)


def unavailable() -> str | None:
    """Why simulated hosts cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_NET_ADMIN and CAP_SYS_ADMIN)"
    probe = f"{NS_PREFIX}probe-{os.getpid()}-{secrets.token_hex(3)}"
    try:
        made = _run(IP, "netns", "add", probe, check=False)
    except FileNotFoundError:
        return "iproute2's `ip` is not installed"
    if made.returncode != 0:
        return f"`ip netns add` is not allowed here: {made.stderr.strip()}"
    try:
        moved = _run(IP, "netns", "exec", probe, UNSHARE, "--mount", "true", check=False)
        if moved.returncode != 0:
            return f"`unshare --mount` is not allowed here: {moved.stderr.strip()}"
    finally:
        _run(IP, "netns", "del", probe, check=False)
    return None


@contextlib.contextmanager
def _allocation_lock() -> Iterator[None]:
    with open(LOCK_PATH, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _children() -> dict[int, list[int]]:
    """Every live process's children, from /proc (zombies left out)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            raw = (entry / "stat").read_text()
            fields = raw[raw.rindex(")") + 2 :].split()
            if fields[0] != "Z":
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def _with_descendants(pids: list[int]) -> list[int]:
    children = _children()
    found, todo = [], list(pids)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.append(pid)
            todo += children.get(pid, [])
    return found


def _namespace_pids(ns: str) -> list[int]:
    """The processes of `ns` and their descendants: a host's tools may sit in namespaces of
    their own (vidd's box gives HandBrakeCLI an empty network namespace), still on the host."""
    listed = _run(IP, "netns", "pids", ns, check=False)
    return _with_descendants([int(p) for p in listed.stdout.split() if p.isdigit()])


def _kill_namespace(ns: str, timeout: float = 10.0) -> list[int]:
    """SIGKILL every process of `ns` (and their descendants) until none is left; the pids."""
    killed: list[int] = []
    deadline = time.monotonic() + timeout
    while True:
        pids = _namespace_pids(ns)
        if not pids:
            return killed
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        if time.monotonic() > deadline:
            raise AssertionError(f"processes of {ns} survive SIGKILL: {pids}")
        time.sleep(0.05)


def _sweep_stale() -> None:
    """Remove namespaces and bridges whose owner process is gone (a run that was killed)."""
    for line in _run(IP, "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        parts = name.split("-")
        if name.startswith(NS_PREFIX) and len(parts) > 2 and parts[1].isdigit():
            if not _alive(int(parts[1])):
                _kill_namespace(name)
                _run(IP, "netns", "del", name, check=False)
    for line in _run(IP, "-o", "link", "show", "type", "bridge", check=False).stdout.splitlines():
        if ALIAS_PREFIX not in line:
            continue
        name = line.split(":")[1].strip()
        owner = line.split(ALIAS_PREFIX, 1)[1].split()[0]
        if owner.isdigit() and not _alive(int(owner)):
            _run(IP, "link", "del", name, check=False)


def _used_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network this machine routes or has an address in."""
    used: list[ipaddress.IPv4Network] = []
    routes = _run(IP, "-4", "-o", "route", "show", "table", "all", check=False).stdout
    for line in routes.splitlines():
        word = line.split()[0] if line.split() else ""
        if word in ("local", "broadcast", "unreachable", "blackhole", "prohibit"):
            word = line.split()[1]
        with contextlib.suppress(ValueError):
            if word != "default":
                used.append(ipaddress.IPv4Network(word, strict=False))
    for line in _run(IP, "-4", "-o", "addr", "show", check=False).stdout.splitlines():
        words = line.split()
        if "inet" in words:
            used.append(ipaddress.IPv4Interface(words[words.index("inet") + 1]).network)
    return used


class Host:
    """One simulated worker host: network namespace `ns` at `ip`, joined to the bridge by
    the veth `veth` (its root side), with `hidden` folders covered in its mount namespace."""

    def __init__(self, network: Network, name: str, ns: str, ip: str, veth: str) -> None:
        self.network = network
        self.name = name
        self.ns = ns
        self.ip = ip
        self.veth = veth
        self.procs: list[subprocess.Popen[bytes]] = []

    def command(self, args: Sequence[str], hide: Sequence[Path] = ()) -> list[str]:
        """The argument list that runs `args` on this host, `hide` covered by empty tmpfs."""
        argv = [IP, "netns", "exec", self.ns, UNSHARE, "--mount", "--propagation", "private"]
        argv += [sys.executable, "-I", "-S", __file__, "hide"]
        argv += [str(p) for p in hide]
        return [*argv, "--", *args]

    def popen(
        self,
        args: Sequence[str],
        *,
        hide: Sequence[Path] = (),
        env: Mapping[str, str] | None = None,
        log: IO[bytes] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start `args` on this host (each step execs the next: its pid is the command's)."""
        proc = subprocess.Popen(
            self.command(args, hide),
            stdin=subprocess.DEVNULL,
            stdout=log if log is not None else subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def run(
        self, args: Sequence[str], *, hide: Sequence[Path] = (), timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """Run `args` on this host to its end, its output captured as text."""
        return subprocess.run(
            self.command(args, hide), capture_output=True, text=True, timeout=timeout
        )

    def pids(self) -> list[int]:
        """Every process of this host: in its network namespace, and their descendants."""
        return _namespace_pids(self.ns)

    def pids_named(self, comm: str) -> list[int]:
        """The processes of this host whose name (/proc/PID/comm) is `comm`."""
        found = []
        for pid in self.pids():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == comm[:15]:
                    found.append(pid)
        return found

    def kill_all(self) -> list[int]:
        """Host death: SIGKILL every process of the namespace, as a power cut would."""
        killed = _kill_namespace(self.ns)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        return killed

    def cut(self) -> None:
        """Partition: the host's link goes down; its packets go nowhere, no reset is sent."""
        _run(IP, "link", "set", "dev", self.veth, "down")

    def heal(self, timeout: float = 5.0) -> None:
        """The link up again; returns once the kernel says it carries traffic."""
        _run(IP, "link", "set", "dev", self.veth, "up")
        state = Path(f"/sys/class/net/{self.veth}/operstate")
        deadline = time.monotonic() + timeout
        while state.read_text().strip() != "up" and time.monotonic() < deadline:
            time.sleep(0.02)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
        _kill_namespace(self.ns)
        _run(IP, "netns", "del", self.ns, check=False)
        _run(IP, "link", "del", self.veth, check=False)  # gone with the namespace, normally


class Network:
    """A bridge with its own /24 (the front's side at `.1`), and the hosts joined to it."""

    def __init__(self) -> None:
        self.tag = secrets.token_hex(3)
        self.bridge = f"vb{self.tag}"
        self.hosts: list[Host] = []
        self.subnet: ipaddress.IPv4Network | None = None

    @property
    def ip(self) -> str:
        """The bridge's address: what the front and Redis bind to."""
        if self.subnet is None:
            raise RuntimeError("this network is not up")
        return str(self.subnet.network_address + 1)

    def up(self) -> Self:
        with _allocation_lock():
            _sweep_stale()
            used = _used_networks()
            candidates = list(SUBNETS.subnets(new_prefix=24))
            random.shuffle(candidates)
            subnet = next(n for n in candidates if not any(n.overlaps(u) for u in used))
            _run(IP, "link", "add", self.bridge, "type", "bridge")
            self.subnet = subnet
            _run(IP, "link", "set", "dev", self.bridge, "alias", f"{ALIAS_PREFIX}{os.getpid()}")
            _run(IP, "addr", "add", f"{self.ip}/24", "dev", self.bridge)
            _run(IP, "link", "set", "dev", self.bridge, "up")
        return self

    def add_host(self, name: str) -> Host:
        """A new namespace on the bridge, at the next free address."""
        if self.subnet is None:
            raise RuntimeError("this network is not up")
        number = len(self.hosts) + 1
        ns = f"{NS_PREFIX}{os.getpid()}-{self.tag}-{name}"
        veth, peer = f"vv{self.tag}{number}", f"vp{self.tag}{number}"
        ip = str(self.subnet.network_address + 1 + number)
        _run(IP, "netns", "add", ns)
        host = Host(self, name, ns, ip, veth)
        self.hosts.append(host)  # from here on, close() removes it
        _run(IP, "link", "add", veth, "type", "veth", "peer", "name", peer)
        _run(IP, "link", "set", "dev", peer, "netns", ns)
        _run(IP, "link", "set", "dev", veth, "master", self.bridge)
        _run(IP, "link", "set", "dev", veth, "up")
        _run(IP, "-n", ns, "addr", "add", f"{ip}/24", "dev", peer)
        _run(IP, "-n", ns, "link", "set", "dev", peer, "up")
        _run(IP, "-n", ns, "link", "set", "dev", "lo", "up")
        return host

    def close(self) -> None:
        """Every host's processes killed, its namespace and veth removed, then the bridge."""
        errors = []
        for host in self.hosts:
            try:
                host.close()
            except Exception as e:  # tear down the rest regardless
                errors.append(e)
        _run(IP, "link", "del", self.bridge, check=False)
        if errors:
            raise errors[0]

    def __enter__(self) -> Self:
        try:
            return self.up()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalHost:
    """The fallback where namespaces are not allowed (and the bench's plain set-up): a
    "host" is the sessions of the processes it started, on 127.0.0.1, seeing every file.
    No partition and no hidden folders: what needs those must use Host."""

    ip = "127.0.0.1"

    def __init__(self, name: str) -> None:
        self.name = name
        self.procs: list[subprocess.Popen[bytes]] = []

    def popen(
        self,
        args: Sequence[str],
        *,
        hide: Sequence[Path] = (),
        env: Mapping[str, str] | None = None,
        log: IO[bytes] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=log if log is not None else subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def pids(self) -> list[int]:
        """Every live process in the sessions this host started, and their descendants."""
        return _with_descendants(self._session_pids())

    def _session_pids(self) -> list[int]:
        sessions = {p.pid for p in self.procs}
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, ValueError, IndexError):
                raw = (entry / "stat").read_text()
                fields = raw[raw.rindex(")") + 2 :].split()
                if fields[0] != "Z" and int(fields[3]) in sessions:  # state, ..., session
                    found.append(int(entry.name))
        return found

    def pids_named(self, comm: str) -> list[int]:
        found = []
        for pid in self.pids():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == comm[:15]:
                    found.append(pid)
        return found

    def kill_all(self) -> list[int]:
        killed = []
        deadline = time.monotonic() + 10
        while pids := self.pids():
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            killed += pids
            if time.monotonic() > deadline:
                raise AssertionError(f"processes of {self.name} survive SIGKILL: {pids}")
            time.sleep(0.05)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        return killed

    def cut(self) -> None:
        raise NotImplementedError("a local host cannot be partitioned: use a Network")

    def heal(self) -> None:
        raise NotImplementedError("a local host cannot be partitioned: use a Network")

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        self.kill_all()


class LocalNetwork:
    """Hosts as plain process sessions on 127.0.0.1 (see LocalHost)."""

    ip = "127.0.0.1"

    def __init__(self) -> None:
        self.hosts: list[LocalHost] = []

    def up(self) -> Self:
        return self

    def add_host(self, name: str) -> LocalHost:
        host = LocalHost(name)
        self.hosts.append(host)
        return host

    def close(self) -> None:
        for host in self.hosts:
            host.close()


def hide_and_exec(argv: list[str]) -> None:
    """In a fresh mount namespace: mount an empty read-only tmpfs over each folder before
    `--`, then exec the command after it."""
    split = argv.index("--")
    folders, command = argv[:split], argv[split + 1 :]
    for folder in folders:
        subprocess.run(
            [MOUNT, "-t", "tmpfs", "-o", "size=64k,mode=0555,ro", "tmpfs", folder],
            check=True,
            timeout=30,
        )
        if os.listdir(folder):
            raise SystemExit(f"netns hide: {folder} is still visible")
    os.execvp(command[0], command)


if __name__ == "__main__":
    if sys.argv[1:2] != ["hide"]:
        raise SystemExit("usage: netns.py hide DIR... -- COMMAND ARGS...")
    hide_and_exec(sys.argv[2:])
