"""A real vidd run as `python -m vidd serve` on a free loopback port, with its config written
into a folder, and the small HTTP helpers that wait on it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Self

from vidd import config as config_mod

# What the tests run with: a data folder beside the config, no disk guard, a watcher that
# settles in 2 s, two encodes at a time and short waits. A caller may pass its own.
TEST_CONFIG: Mapping[str, Mapping[str, Any]] = {
    "storage": {"data_dir": "var", "min_free_bytes": 0},
    "watch": {"stable_seconds": 2.0, "rescan_seconds": 5.0},
    "encode": {"max_parallel": 2, "stall_timeout_s": 30.0, "kill_grace_s": 2.0},
    "daemon": {"shutdown_timeout_s": 10.0},
}


def free_port() -> int:
    """A loopback port that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(
    folder: Path,
    text: str = "",
    *,
    defaults: Mapping[str, Mapping[str, Any]] = TEST_CONFIG,
    **sections: dict[str, Any],
) -> Path:
    """Write `folder`/config.toml: `defaults` (the tests' unless given), a free port on
    127.0.0.1, then `sections` (a section name to keys that replace those), then `text`."""
    base: dict[str, dict[str, Any]] = {name: dict(keys) for name, keys in defaults.items()}
    base.setdefault("web", {}).update({"host": "127.0.0.1", "port": free_port()})
    for name, keys in sections.items():
        base.setdefault(name, {}).update(keys)
    lines = []
    for name, keys in base.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in keys.items()]
        lines.append("")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.toml"
    path.write_text("\n".join(lines) + "\n" + text, encoding="utf-8")
    return path


def toml_value(value: Any) -> str:
    """One TOML value: a bool, number, string or path, or a list of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(value)


class Daemon:
    """A vidd run as `python -m vidd serve --config ...` in its own process, the way a user
    runs it; `start()` returns once it answers /healthz, `stop()` sends a signal and reaps it.

    `verbose` adds --verbose (the tests want the debug log); `own_session` starts it in a
    session of its own, as systemd starts a service.
    """

    def __init__(
        self,
        config_path: Path,
        env: Mapping[str, str] | None = None,
        *,
        verbose: bool = True,
        own_session: bool = False,
    ) -> None:
        self.config_path = config_path
        self.config = config_mod.load(config_path)
        self.env = dict(env or {})
        self.verbose = verbose
        self.own_session = own_session
        self.log_path = config_path.parent / f"vidd-{time.monotonic_ns()}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise RuntimeError("this vidd has not been started")
        return self._proc

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://{self.config.web.host}:{self.config.web.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.config.web.host}:{self.config.web.port}/ws"

    @property
    def data(self) -> Path:
        return self.config.storage.data_dir

    @property
    def inbox(self) -> Path:
        return self.config.storage.inbox_dir

    def log(self) -> str:
        """Everything it has written to stdout and stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def start(self, timeout: float = 20.0) -> Self:
        """Start it and wait until it answers; if it does not, stop it and fail."""
        args = [sys.executable, "-m", "vidd", "serve", "--config", str(self.config_path)]
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                [*args, "--verbose"] if self.verbose else args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
                cwd=self.config_path.parent,
                start_new_session=self.own_session,
            )
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Until GET /healthz answers 200; AssertionError if it exits or takes too long."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"vidd exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"vidd did not answer within {timeout} s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Send `sig` unless it has exited, wait (SIGKILL after `timeout` s); its exit code,
        or None if it was never started."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._proc.send_signal(sig)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        return self._proc.returncode

    def __enter__(self) -> Self:
        """Start it, unless it is running already."""
        return self if self._proc is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_vidd(
    *args: str, timeout: float = 30.0, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m vidd ARGS` run to its end, its output captured as text; `env` replaces
    this process's environment when given."""
    return subprocess.run(
        [sys.executable, "-m", "vidd", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=None if env is None else dict(env),
    )


def start_daemon(
    config_path: Path, env: Mapping[str, str] | None = None, timeout: float = 20.0
) -> Daemon:
    """A vidd serving `config_path` with --verbose, answering on its port."""
    return Daemon(config_path, env).start(timeout)


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, interval: float = 0.1) -> Any:
    """Poll until `predicate()` returns something truthy; return it, or fail."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {predicate}")
        time.sleep(interval)
