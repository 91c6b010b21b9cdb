"""The write-lease check, against real open files, real processes and the real kernel."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from vidd import lease

ROOT = Path(__file__).resolve().parent.parent

HOLDER = """
import sys
f = open(sys.argv[1], sys.argv[2])
print("open", flush=True)
sys.stdin.readline()
f.close()
print("closed", flush=True)
sys.stdin.readline()
"""


@pytest.fixture
async def handled() -> None:
    """The SIGIO handler vidd installs, on this test's loop."""
    lease.ignore_lease_breaks(asyncio.get_running_loop())


@pytest.fixture
def holder(tmp_path: Path):
    """Start a process that opens a file in a mode, then closes it when told."""
    procs: list[subprocess.Popen[str]] = []

    def start(path: Path, mode: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(  # noqa: S603 - a fixed argument list
            [sys.executable, "-c", HOLDER, str(path), mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline() == "open\n"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.communicate()  # reaps, and closes the pipes


def step(proc: subprocess.Popen[str]) -> str:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("\n")
    proc.stdin.flush()
    return proc.stdout.readline()


async def test_a_thread_holding_the_file_for_writing(tmp_path: Path, handled: None) -> None:
    path = tmp_path / "clip.avi"
    path.write_bytes(b"x" * 1000)
    opened, release = threading.Event(), threading.Event()

    def hold() -> None:
        with open(path, "ab") as f:
            f.write(b"y")
            opened.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert opened.wait(10)
        assert lease.has_writer(path) is True
    finally:
        release.set()
        thread.join()
    assert lease.has_writer(path) is False


@pytest.mark.parametrize("mode", ["wb", "ab", "r+b"])
async def test_another_process_holding_the_file_for_writing(
    tmp_path: Path, handled: None, holder, mode: str
) -> None:
    path = tmp_path / "clip.avi"
    path.write_bytes(b"x" * 1000)
    proc = holder(path, mode)
    assert lease.has_writer(path) is True
    assert lease.has_writer(path) is True  # asking does not change the answer
    assert step(proc) == "closed\n"
    assert lease.has_writer(path) is False


async def test_readers_are_not_writers(tmp_path: Path, handled: None, holder) -> None:
    path = tmp_path / "clip.avi"
    path.write_bytes(b"x" * 1000)
    holder(path, "rb")
    assert lease.has_writer(path) is False


async def test_a_writer_that_exits_without_closing(tmp_path: Path, handled: None, holder) -> None:
    path = tmp_path / "clip.avi"
    path.write_bytes(b"")
    proc = holder(path, "wb")
    assert lease.has_writer(path) is True
    proc.kill()
    proc.wait()
    assert lease.has_writer(path) is False


async def test_missing_file_and_symlink(tmp_path: Path, handled: None) -> None:
    with pytest.raises(FileNotFoundError):
        lease.has_writer(tmp_path / "gone.avi")
    target = tmp_path / "target.avi"
    target.write_bytes(b"x")
    link = tmp_path / "link.avi"
    link.symlink_to(target)
    assert lease.has_writer(link) is None  # never followed


def test_without_a_sigio_handler_it_does_not_ask() -> None:
    # The kernel would send SIGIO to a lease holder, and its default action kills.
    previous = signal.signal(signal.SIGIO, signal.SIG_DFL)
    try:
        with tempfile.NamedTemporaryFile() as f:
            assert lease.has_writer(Path(f.name)) is None
    finally:
        signal.signal(signal.SIGIO, previous)


def test_not_the_owner_cannot_tell() -> None:
    """Without owning the file (and without CAP_LEASE) Linux refuses the lease: None."""
    setpriv = shutil.which("setpriv")
    if setpriv is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to run as another user")
    folder = Path(tempfile.mkdtemp())  # tmp_path's parents are private to root
    try:
        folder.chmod(0o755)
        path = folder / "clip.avi"
        path.write_bytes(b"x")
        path.chmod(0o644)
        code = (
            "import signal, sys; from pathlib import Path; from vidd import lease; "
            "signal.signal(signal.SIGIO, lambda *a: None); "
            "print(lease.has_writer(Path(sys.argv[1])))"
        )
        out = subprocess.run(  # noqa: S603 - a fixed argument list
            [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
             sys.executable, "-c", code, str(path)],
            capture_output=True, text=True, timeout=30, cwd=ROOT, check=True,
        ).stdout  # fmt: skip
        assert out.strip() == "None"
    finally:
        shutil.rmtree(folder)


async def test_the_sigio_handler_keeps_the_process_alive() -> None:
    loop = asyncio.get_running_loop()
    lease.ignore_lease_breaks(loop)
    os.kill(os.getpid(), signal.SIGIO)  # what a lease break delivers
    await asyncio.sleep(0.05)
    # ...and children start with the default again, unlike SIG_IGN.
    code = "import signal; print(signal.getsignal(signal.SIGIO) == signal.SIG_DFL)"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert out.decode().strip() == "True"
