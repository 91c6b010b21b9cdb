"""`vidd worker` as a real process for the tests: started against a broker with its own
work folder, its log kept in a file; plus what the tests look at around it: the broker's
queue and the HandBrakeCLI processes working in a folder."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from testkit.procs import live_processes
from vidd.celery_app import QUEUE, TASK_NAME, make_app

ROOT = Path(__file__).resolve().parent.parent


class WorkerProcess:
    def __init__(
        self,
        broker_url: str,
        folder: Path,
        name: str = "test-worker",
        wrapper: tuple[str, ...] = (),
    ) -> None:
        self.broker_url = broker_url
        self.folder = folder
        self.work_dir = folder / "work"
        self.log_path = folder / f"{name}.log"
        self.name = name
        self.wrapper = list(wrapper)  # a command that execs the worker's (a sandbox, a switch)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str) -> WorkerProcess:
        self.folder.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "VIDD_BROKER_URL": self.broker_url, "PYTHONUNBUFFERED": "1"}
        env.pop("REMAP_SIGTERM", None)
        args = [*self.wrapper, sys.executable, "-m", "vidd", "worker", "--name", self.name]
        args += ["--work-dir", str(self.work_dir), "--max-encode-s", "600", *extra]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, cwd=ROOT, start_new_session=True,
            )  # fmt: skip
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    async def wait_log(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            assert self.proc is not None and self.proc.poll() is None, self.log()
            assert time.monotonic() < deadline, f"no {text!r} in the worker's log:\n{self.log()}"
            await asyncio.sleep(0.1)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL to its whole session if it lingers; returns its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # and any child it left
        except ProcessLookupError:
            pass
        return self.proc.wait()

    def attempt_folders(self) -> list[Path]:
        return sorted(self.work_dir.glob("attempt-*")) if self.work_dir.exists() else []


def send(broker_url: str, kwargs: dict[str, Any], task_id: str) -> None:
    """Send one vidd.encode message as the front does (blocking: call it in a thread)."""
    app = make_app(broker_url, max_encode_s=600)
    try:
        app.send_task(TASK_NAME, kwargs=kwargs, task_id=task_id, queue=QUEUE)
    finally:
        app.close()


def handbrake_pids(folder: Path) -> list[int]:
    """The HandBrakeCLI processes whose command line names a file under `folder`."""
    return [
        pid
        for pid, argv in live_processes()
        if argv[0].endswith(b"HandBrakeCLI") and str(folder).encode() in b" ".join(argv)
    ]
